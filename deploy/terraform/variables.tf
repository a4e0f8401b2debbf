# ------------------------------------------------------------------ general
variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name prefix of every resource (queues become <name>-ingest and <name>-ingest-dlq)."
  type        = string
  default     = "hiring"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2-21 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (tag, and DEPLOY_ENV in the tasks)."
  type        = string
  default     = "prod"
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified by the stack's alarms (dead-letter queue not empty)."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Retention of every CloudWatch log group this stack creates."
  type        = number
  default     = 365
}

# ------------------------------------------------------------------ network
variable "vpc_cidr" {
  description = "CIDR of the VPC; subnets are /24s carved out of it."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Availability zones to spread subnets over (2 or 3)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3 (RDS needs subnets in two zones)."
  }
}

variable "availability_zones" {
  description = "Zone names to use (the first az_count available of them). Empty: <region>a, b, c, d."
  type        = list(string)
  default     = []
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper) instead of one per zone (zone-resilient)."
  type        = bool
  default     = true
}

variable "interface_endpoints" {
  description = "Interface VPC endpoints to create (e.g. [\"ecr.api\", \"ecr.dkr\", \"logs\", \"secretsmanager\", \"sqs\"]) so that traffic to them skips the NAT gateway. S3 always has a (free) gateway endpoint."
  type        = list(string)
  default     = []
}

# ------------------------------------------------------------------ data
variable "raw_bucket_name" {
  description = "The raw data bucket (S3_RAW_BUCKET). Bucket names are global: change it if it is taken."
  type        = string
  default     = "globant-raw-data"
}

variable "sqs_visibility_timeout_seconds" {
  description = "Default visibility timeout of the ingest queue (the consumer extends it while it works)."
  type        = number
  default     = 300
}

variable "sqs_max_receive_count" {
  description = "Receives of one message before it moves to the dead-letter queue."
  type        = number
  default     = 5
}

variable "db_name" {
  description = "RDS_DB_NAME."
  type        = string
  default     = "hiring"
}

variable "db_username" {
  description = "RDS_USERNAME (the master user; its password is managed by RDS in Secrets Manager)."
  type        = string
  default     = "hiring"
}

variable "db_engine_version" {
  description = "PostgreSQL major version (minor versions are upgraded automatically)."
  type        = string
  default     = "16"
}

variable "db_instance_class" {
  description = "RDS instance class. Size it for the connections: each ingest task opens up to ingest_concurrency + 4, each query task up to 10 (HIRING_QUERY_DB_POOL); with 10 ingest tasks (ingest_max_count) that would be 10 x 8 + 6 x 10 = 140, and a db.t4g.small allows about 190 (a micro about 80)."
  type        = string
  default     = "db.t4g.small"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling limit in GiB."
  type        = number
  default     = 100
}

variable "db_multi_az" {
  description = "Standby replica in a second zone (set false to halve the cost of a test stack)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Automated backup retention."
  type        = number
  default     = 7
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

# ------------------------------------------------------------------ services
variable "image_tag" {
  description = "Tag the task definitions Terraform writes run. The pipeline pushes every build as :<commit>, rolls the services onto it, and moves this tag to it only once every rollout COMPLETED (deploy/rollout.sh)."
  type        = string
  default     = "release"
}

variable "base_image" {
  description = "Python base image the pipeline builds from (Dockerfile ARG PYTHON_IMAGE). Empty (the default): the official python:3.11-slim-bookworm through this account's ECR pull-through cache of ECR Public (ecr.tf), so builds never pull anonymously from Docker Hub."
  type        = string
  default     = ""
}

variable "otlp_endpoint" {
  description = "OTEL_EXPORTER_OTLP_ENDPOINT for the tasks (OTLP/HTTP, e.g. an ADOT collector); empty: no trace export."
  type        = string
  default     = ""
}

variable "ingest_cpu" {
  description = "CPU units of one ingest task."
  type        = number
  default     = 512
}

variable "ingest_memory" {
  description = "Memory (MiB) of one ingest task."
  type        = number
  default     = 1024
}

variable "ingest_min_count" {
  description = "Fewest ingest tasks; 0 lets the consumers scale to zero when the queue is empty."
  type        = number
  default     = 0
}

variable "ingest_max_count" {
  description = "Most ingest tasks. Null (the default): the cap docs/capacity.md gives for db_instance_class, from the measured PostgreSQL CPU per row (1 task up to db.r6g.xlarge, 2 for a 2xlarge, 4 for a 4xlarge, 2 for a class it does not list). One task already applies INGEST_CONCURRENCY files at once; past the cap more tasks only add contention on the one primary."
  type        = number
  default     = null
}

variable "ingest_backlog_per_task" {
  description = "Target of the ingest autoscaling: visible messages (files) per running task."
  type        = number
  default     = 8
}

variable "ingest_concurrency" {
  description = "INGEST_CONCURRENCY: files one ingest task works on at once."
  type        = number
  default     = 4
}

variable "query_cpu" {
  description = "CPU units of one query task."
  type        = number
  default     = 512
}

variable "query_memory" {
  description = "Memory (MiB) of one query task."
  type        = number
  default     = 1024
}

variable "query_min_count" {
  description = "Fewest query tasks."
  type        = number
  default     = 2
}

variable "query_max_count" {
  description = "Most query tasks."
  type        = number
  default     = 6
}

variable "query_cpu_target" {
  description = "Average CPU (%) the query service is scaled to."
  type        = number
  default     = 60
}

variable "api_keys" {
  description = "Initial HIRING_API_KEYS value (`key:read,key2:read+upload`). Null: a random key with read+upload is generated; either way Terraform only seeds the secret and later edits in Secrets Manager are kept."
  type        = string
  default     = null
  sensitive   = true
}

variable "api_throttling_rate_limit" {
  description = "API Gateway steady-state requests per second."
  type        = number
  default     = 100
}

variable "api_throttling_burst_limit" {
  description = "API Gateway burst."
  type        = number
  default     = 200
}

# ------------------------------------------------------------------ CI/CD
variable "source_repository" {
  description = "Repository the pipeline builds, as owner/name on the code connection's provider. Empty: no pipeline is created."
  type        = string
  default     = ""
}

variable "source_branch" {
  description = "Branch whose pushes run the pipeline."
  type        = string
  default     = "main"
}

variable "codestar_connection_arn" {
  description = "An existing CodeStar/CodeConnections connection. Empty: one is created (GitHub) and must be confirmed once in the console."
  type        = string
  default     = ""
}

variable "codebuild_compute_type" {
  description = "CodeBuild machine size (the build runs the test suite and builds the image)."
  type        = string
  default     = "BUILD_GENERAL1_MEDIUM"
}
