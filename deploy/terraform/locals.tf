data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# The zones are named, not "whatever the region offers": the set must not change by itself.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name = "zone-name"
    values = length(var.availability_zones) > 0 ? var.availability_zones : [
      for suffix in ["a", "b", "c", "d"] : "${var.region}${suffix}"
    ]
  }
}

locals {
  name       = var.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  tags = merge(
    {
      Project     = "hiring-pipeline"
      Environment = var.environment
      ManagedBy   = "terraform"
    },
    var.tags,
  )

  queue_name = "${local.name}-ingest"
  dlq_name   = "${local.name}-ingest-dlq"

  # The API may write uploads only under the tables' prefixes (services/query: `{table}/{id}/{file}`).
  upload_prefixes = ["hired_employees", "departments", "jobs"]

  image = "${aws_ecr_repository.app.repository_url}:${var.image_tag}"

  # CONTRACT §3, shared by every task; RDS_PASSWORD comes from Secrets Manager (secrets, not env).
  common_environment = concat(
    [
      { name = "S3_RAW_BUCKET", value = aws_s3_bucket.raw.bucket },
      { name = "SQS_QUEUE_URL", value = aws_sqs_queue.ingest.url },
      { name = "RDS_ENDPOINT", value = "${aws_db_instance.main.address}:${aws_db_instance.main.port}" },
      { name = "RDS_DB_NAME", value = var.db_name },
      { name = "RDS_USERNAME", value = var.db_username },
      { name = "AWS_EXECUTION_ENV", value = "ECS" },
      { name = "AWS_REGION", value = local.region },
      { name = "DEPLOY_ENV", value = var.environment },
      { name = "HIRING_LOG_FORMAT", value = "json" },
    ],
    var.otlp_endpoint == "" ? [] : [
      { name = "OTEL_EXPORTER_OTLP_ENDPOINT", value = var.otlp_endpoint },
    ],
  )

  db_password_secret = "${aws_db_instance.main.master_user_secret[0].secret_arn}:password::"
  # RDS rotates that secret (7 days by default): the services read it for every new connection
  # (RDS_PASSWORD_SECRET_ARN); RDS_PASSWORD, injected at task start, is only the fallback.
  db_secret_arn = aws_db_instance.main.master_user_secret[0].secret_arn
}
