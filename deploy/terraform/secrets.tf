# HIRING_API_KEYS for the query service (format: `key:read,key2:read+upload`; see
# services/query/auth.py). The database password is not here: RDS manages it (database.tf).

resource "aws_secretsmanager_secret" "api_keys" {
  #checkov:skip=CKV2_AWS_57: API keys are issued to clients by hand; rotating them automatically would lock those clients out. Rotate by editing the value and redeploying the query service.
  name                    = "${local.name}/api-keys"
  description             = "HIRING_API_KEYS of the ${local.name} query API"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "api_keys" {
  secret_id = aws_secretsmanager_secret.api_keys.id
  # Seeded once (no random provider here: uuid() is Terraform's own random); edits made later in
  # Secrets Manager are kept.
  secret_string = coalesce(var.api_keys, "${uuid()}:read+upload")

  lifecycle {
    ignore_changes = [secret_string]
  }
}
