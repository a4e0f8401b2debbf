# Scheduled backups (CONTRACT §6): EventBridge Scheduler runs `hiring backup` as a one-off Fargate
# task, which writes every table as Avro plus manifest.json into the raw bucket's
# `backups/<backup-id>/` prefix (the ingest consumer never ingests that prefix, and the bucket
# notifies the queue of .csv objects only). The same prefix is where `POST /backups` writes and where
# `POST /tables/{table}/restore` reads, so the query task role gets access to it here too.
# Retention: the raw bucket's lifecycle rule "expire-backups" (storage.tf; a bucket has one lifecycle
# configuration) expires objects under `backups/` only, after var.backup_retention_days.

variable "backup_schedule" {
  description = "When the scheduled backup runs: an EventBridge Scheduler expression (UTC)"
  type        = string
  default     = "cron(0 3 * * ? *)"
}

variable "backup_retention_days" {
  description = "Days a backup under the raw bucket's backups/ prefix is kept"
  type        = number
  default     = 30

  validation {
    condition     = var.backup_retention_days >= 1
    error_message = "backup_retention_days must be at least 1."
  }
}

variable "backup_cpu" {
  description = "Fargate CPU units of the backup task"
  type        = number
  default     = 512
}

variable "backup_memory" {
  description = "Fargate memory (MiB) of the backup task: the backup streams, so it stays small"
  type        = number
  default     = 1024
}

locals {
  backup_prefix = "backups"
}

# ---------------------------------------------------------------- task role
resource "aws_iam_role" "backup" {
  name               = "${local.name}-backup-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "backups_prefix" {
  statement {
    sid       = "ListBackups"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.raw.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.backup_prefix}/", "${local.backup_prefix}/*"]
    }
  }

  statement {
    sid = "ReadWriteBackups"
    actions = [
      "s3:GetObject",
      "s3:PutObject", # PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload
      "s3:AbortMultipartUpload",
    ]
    resources = ["${aws_s3_bucket.raw.arn}/${local.backup_prefix}/*"]
  }

  statement {
    sid       = "EncryptBackups"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "backup" {
  name   = "read-write-backups"
  role   = aws_iam_role.backup.id
  policy = data.aws_iam_policy_document.backups_prefix.json
}

# POST /backups and POST /tables/{table}/restore run in the query service.
resource "aws_iam_role_policy" "query_backups" {
  name   = "read-write-backups"
  role   = aws_iam_role.query.id
  policy = data.aws_iam_policy_document.backups_prefix.json
}

# ---------------------------------------------------------------- task definition
resource "aws_ecs_task_definition" "backup" {
  family                   = "${local.name}-backup"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.backup_cpu
  memory                   = var.backup_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.backup.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = local.tmp_volume
  }

  container_definitions = jsonencode([
    {
      name      = "backup"
      image     = local.image
      essential = true
      # a new folder backups/<backup-id>/ per run
      command                = ["backup", "--to", "s3://${aws_s3_bucket.raw.bucket}/${local.backup_prefix}", "--new-folder"]
      readonlyRootFilesystem = true
      environment = concat(local.common_environment, [
        { name = "OTEL_SERVICE_NAME", value = "hiring-backup" },
        { name = "TMPDIR", value = "/tmp" },
      ])
      secrets = [
        { name = "RDS_PASSWORD", valueFrom = local.db_password_secret },
      ]
      mountPoints = [
        { sourceVolume = local.tmp_volume, containerPath = "/tmp", readOnly = false },
      ]
      # the execution role may write the ingest log group: backups log there under their own prefix
      logConfiguration = {
        logDriver = "awslogs"
        options   = merge(local.log_options.ingest, { "awslogs-stream-prefix" = "backup" })
      }
    },
  ])
}

# ---------------------------------------------------------------- schedule
data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "backup_scheduler" {
  name               = "${local.name}-backup-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

data "aws_iam_policy_document" "backup_scheduler" {
  statement {
    sid       = "RunTheBackupTask"
    actions   = ["ecs:RunTask"]
    resources = ["${aws_ecs_task_definition.backup.arn_without_revision}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.main.arn]
    }
  }

  statement {
    sid       = "DecryptTheScheduleInput" # the schedule is encrypted with the stack's key
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }

  statement {
    sid       = "PassItsRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.backup.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "backup_scheduler" {
  name   = "run-backup-task"
  role   = aws_iam_role.backup_scheduler.id
  policy = data.aws_iam_policy_document.backup_scheduler.json
}

resource "aws_scheduler_schedule" "backup" {
  name                         = "${local.name}-backup"
  description                  = "hiring backup of every table into s3://${aws_s3_bucket.raw.bucket}/${local.backup_prefix}/"
  schedule_expression          = var.backup_schedule
  schedule_expression_timezone = "UTC"
  kms_key_arn                  = aws_kms_key.main.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_ecs_cluster.main.arn
    role_arn = aws_iam_role.backup_scheduler.arn

    ecs_parameters {
      task_definition_arn = aws_ecs_task_definition.backup.arn
      launch_type         = "FARGATE"
      platform_version    = "LATEST"
      task_count          = 1

      network_configuration {
        subnets          = aws_subnet.app[*].id
        security_groups  = [aws_security_group.ingest.id] # the consumers' group: it reaches the database
        assign_public_ip = false
      }
    }

    retry_policy {
      maximum_retry_attempts       = 2
      maximum_event_age_in_seconds = 3600
    }
  }

  depends_on = [aws_iam_role_policy.backup_scheduler, aws_iam_role_policy.backup]
}
