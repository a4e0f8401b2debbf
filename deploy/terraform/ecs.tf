# ECS on Fargate: one cluster, one image, two services.
#   ingest - `hiring ingest`, SQS consumers, autoscaled on the queue's backlog (autoscaling.tf);
#   query  - `hiring query --port 8080`, registered in Cloud Map for the API Gateway VPC link.
# One-off tasks (`hiring migrate`, `hiring replay`) run from the ingest task definition with a
# command override: see the `run_task_example` output and deploy/README.md.

resource "aws_ecs_cluster" "main" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled" # also the source of RunningTaskCount for the ingest scaling
  }
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

# ---------------------------------------------------------------- service discovery
resource "aws_service_discovery_private_dns_namespace" "main" {
  name        = "${local.name}.internal"
  description = "Private names of the ${local.name} services"
  vpc         = aws_vpc.main.id
}

resource "aws_service_discovery_service" "query" {
  name = "query"

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.main.id
    routing_policy = "MULTIVALUE"

    # SRV records: API Gateway's Cloud Map integration needs each instance's port.
    dns_records {
      type = "SRV"
      ttl  = 10
    }
  }

  # Instances are healthy as long as ECS says their container is (the image's health check).
  health_check_custom_config {
    failure_threshold = 1
  }
}

# ---------------------------------------------------------------- task definitions
locals {
  tmp_volume = "tmp" # Fargate ephemeral storage: /tmp is the only writable path (read-only root)

  log_options = {
    ingest = {
      "awslogs-group"         = aws_cloudwatch_log_group.ingest.name
      "awslogs-region"        = local.region
      "awslogs-stream-prefix" = "ingest"
    }
    query = {
      "awslogs-group"         = aws_cloudwatch_log_group.query.name
      "awslogs-region"        = local.region
      "awslogs-stream-prefix" = "query"
    }
  }
}

resource "aws_ecs_task_definition" "ingest" {
  family                   = "${local.name}-ingest"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.ingest_cpu
  memory                   = var.ingest_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.ingest.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = local.tmp_volume
  }

  container_definitions = jsonencode([
    {
      name                   = "ingest"
      image                  = local.image
      essential              = true
      command                = ["ingest"]
      readonlyRootFilesystem = true
      stopTimeout            = 60 # the consumer drains in-flight files on SIGTERM
      environment = concat(local.common_environment, [
        { name = "OTEL_SERVICE_NAME", value = "hiring-ingest" },
        { name = "INGEST_CONCURRENCY", value = tostring(var.ingest_concurrency) },
        { name = "RDS_PASSWORD_SECRET_ARN", value = local.db_secret_arn },
      ])
      secrets = [
        { name = "RDS_PASSWORD", valueFrom = local.db_password_secret },
      ]
      mountPoints = [
        { sourceVolume = local.tmp_volume, containerPath = "/tmp", readOnly = false },
      ]
      logConfiguration = { logDriver = "awslogs", options = local.log_options.ingest }
    },
  ])
}

resource "aws_ecs_task_definition" "query" {
  family                   = "${local.name}-query"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.query_cpu
  memory                   = var.query_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.query.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = local.tmp_volume
  }

  container_definitions = jsonencode([
    {
      name                   = "query"
      image                  = local.image
      essential              = true
      command                = ["query", "--port", "8080"]
      readonlyRootFilesystem = true
      stopTimeout            = 45 # 15 s serving with /readyz failing (Cloud Map and the VPC link catch up), then requests finish
      portMappings = [
        { containerPort = 8080, protocol = "tcp", name = "http" },
      ]
      environment = concat(local.common_environment, [
        { name = "OTEL_SERVICE_NAME", value = "hiring-query" },
        { name = "HIRING_SHUTDOWN_GRACE_SECONDS", value = "15" },
        { name = "RDS_PASSWORD_SECRET_ARN", value = local.db_secret_arn },
      ])
      secrets = [
        { name = "RDS_PASSWORD", valueFrom = local.db_password_secret },
        { name = "HIRING_API_KEYS", valueFrom = aws_secretsmanager_secret.api_keys.arn },
      ]
      mountPoints = [
        { sourceVolume = local.tmp_volume, containerPath = "/tmp", readOnly = false },
      ]
      healthCheck = {
        command     = ["CMD", "python", "/usr/local/bin/hiring-healthcheck"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      logConfiguration = { logDriver = "awslogs", options = local.log_options.query }
    },
  ])

  depends_on = [aws_secretsmanager_secret_version.api_keys]
}

# ---------------------------------------------------------------- services
resource "aws_ecs_service" "ingest" {
  name                    = "ingest"
  cluster                 = aws_ecs_cluster.main.id
  task_definition         = aws_ecs_task_definition.ingest.arn
  desired_count           = var.ingest_min_count
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  propagate_tags          = "SERVICE"
  enable_ecs_managed_tags = true

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.app[*].id
    security_groups  = [aws_security_group.ingest.id]
    assign_public_ip = false
  }

  lifecycle {
    ignore_changes = [desired_count] # owned by the autoscaling once created
  }

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.ingest]
}

resource "aws_ecs_service" "query" {
  name                    = "query"
  cluster                 = aws_ecs_cluster.main.id
  task_definition         = aws_ecs_task_definition.query.arn
  desired_count           = var.query_min_count
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  propagate_tags          = "SERVICE"
  enable_ecs_managed_tags = true

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.app[*].id
    security_groups  = [aws_security_group.query.id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn   = aws_service_discovery_service.query.arn
    container_name = "query"
    container_port = 8080
  }

  lifecycle {
    ignore_changes = [desired_count] # owned by the autoscaling once created
  }

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.query]
}
