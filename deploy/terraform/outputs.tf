# Everything CONTRACT §3 needs, and what the deploy steps of deploy/README.md use.

output "S3_RAW_BUCKET" {
  description = "The raw bucket."
  value       = aws_s3_bucket.raw.bucket
}

output "SQS_QUEUE_URL" {
  description = "The ingest queue."
  value       = aws_sqs_queue.ingest.url
}

output "sqs_dlq_url" {
  description = "The ingest queue's dead-letter queue."
  value       = aws_sqs_queue.ingest_dlq.url
}

output "RDS_ENDPOINT" {
  description = "host:port of the database."
  value       = "${aws_db_instance.main.address}:${aws_db_instance.main.port}"
}

output "RDS_DB_NAME" {
  description = "The database name."
  value       = var.db_name
}

output "RDS_USERNAME" {
  description = "The database user."
  value       = var.db_username
}

output "rds_password_secret_arn" {
  description = "Secrets Manager secret (managed by RDS) whose JSON key `password` is RDS_PASSWORD."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "api_keys_secret_arn" {
  description = "Secrets Manager secret holding HIRING_API_KEYS."
  value       = aws_secretsmanager_secret.api_keys.arn
}

output "AWS_REGION" {
  description = "The region."
  value       = local.region
}

output "api_url" {
  description = "Base URL of the query API (API Gateway)."
  value       = aws_apigatewayv2_stage.default.invoke_url
}

output "ecr_repository_url" {
  description = "Where the image is pushed (tags: <commit> and the deploy tag)."
  value       = aws_ecr_repository.app.repository_url
}

output "image_deploy_tag" {
  description = "The tag the services run."
  value       = var.image_tag
}

output "ecs_cluster_name" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "ecs_services" {
  description = "The ECS services (for `aws ecs update-service`)."
  value       = [aws_ecs_service.ingest.name, aws_ecs_service.query.name]
}

output "kms_key_arn" {
  description = "The stack's key (S3 objects are encrypted with it: uploaders need kms:GenerateDataKey)."
  value       = aws_kms_key.main.arn
}

output "pipeline_name" {
  description = "The CodePipeline (null when var.source_repository is empty)."
  value       = local.pipeline_enabled ? aws_codepipeline.app[0].name : null
}

output "source_connection_arn" {
  description = "The code connection the pipeline uses (a created one must be confirmed in the console once)."
  value       = local.pipeline_enabled ? local.connection_arn : null
}

output "run_task_example" {
  description = "A one-off `hiring migrate` on the cluster; replace migrate with e.g. `replay` as needed."
  value = join(" ", [
    "aws ecs run-task --cluster ${aws_ecs_cluster.main.name} --launch-type FARGATE",
    "--task-definition ${aws_ecs_task_definition.ingest.family}",
    "--network-configuration 'awsvpcConfiguration={subnets=[${join(",", aws_subnet.app[*].id)}],securityGroups=[${aws_security_group.ingest.id}],assignPublicIp=DISABLED}'",
    "--overrides '{\"containerOverrides\":[{\"name\":\"ingest\",\"command\":[\"migrate\"]}]}'",
  ])
}
