# Log groups of the services and the API (RDS, VPC and CI log groups live with their resources).

resource "aws_cloudwatch_log_group" "ingest" {
  name              = "/ecs/${local.name}/ingest"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "query" {
  name              = "/ecs/${local.name}/query"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/aws/apigateway/${local.name}/access"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}
