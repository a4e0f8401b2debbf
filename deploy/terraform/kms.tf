# One customer-managed key for the stack's data at rest: the raw bucket, the pipeline's artifacts,
# RDS (storage, Performance Insights, the managed master-password secret), the API-keys secret,
# ECR, CodeBuild and every CloudWatch log group. IAM policies grant its use per role (the key
# policy delegates to IAM); CloudWatch Logs needs a key-policy grant of its own.
resource "aws_kms_key" "main" {
  description             = "${local.name}: data at rest (S3, RDS, Secrets Manager, ECR, logs, CI)"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsOfThisAccount"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.main.key_id
}
