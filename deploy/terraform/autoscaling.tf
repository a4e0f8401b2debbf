# ingest: scaled on the queue's backlog per running task, down to zero tasks when it is empty.
#   - target tracking keeps (ApproximateNumberOfMessagesVisible + ...NotVisible) / RunningTaskCount
#     near var.ingest_backlog_per_task, scaling out and in (to var.ingest_min_count, 0 by default).
#     Messages in flight count too: while a task works on a file the metric stays above 0, and
#     target tracking (which rounds up) keeps at least one task instead of stopping it mid-file;
#   - target tracking cannot leave zero (with no task the per-task metric has no value), so a
#     step-scaling alarm adds the first task when messages are visible and no task runs.
# query: target tracking on average CPU.

locals {
  # docs/capacity.md, "How many consumers one RDS instance takes": ingest tasks worth running per
  # instance class (PostgreSQL's CPU saturates first; one task keeps INGEST_CONCURRENCY backends busy).
  ingest_cap_by_class = {
    "db.t4g.micro"   = 1
    "db.t4g.small"   = 1
    "db.t4g.medium"  = 1
    "db.t4g.large"   = 1
    "db.r6g.large"   = 1
    "db.r6g.xlarge"  = 1
    "db.r6g.2xlarge" = 2
    "db.r6g.4xlarge" = 4
  }
  ingest_max_count = coalesce(var.ingest_max_count, lookup(local.ingest_cap_by_class, var.db_instance_class, 2))

  ingest_resource_id = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.ingest.name}"
  query_resource_id  = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.query.name}"
}

resource "aws_appautoscaling_target" "ingest" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = local.ingest_resource_id
  min_capacity       = var.ingest_min_count
  max_capacity       = local.ingest_max_count
}

resource "aws_appautoscaling_policy" "ingest_backlog" {
  name               = "${local.name}-ingest-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.ingest.service_namespace
  scalable_dimension = aws_appautoscaling_target.ingest.scalable_dimension
  resource_id        = aws_appautoscaling_target.ingest.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.ingest_backlog_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      metrics {
        id          = "visible"
        label       = "Messages visible in the ingest queue"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = aws_sqs_queue.ingest.name
            }
          }
        }
      }

      metrics {
        id          = "in_flight"
        label       = "Messages being processed"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesNotVisible"
            dimensions {
              name  = "QueueName"
              value = aws_sqs_queue.ingest.name
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        label       = "Running ingest tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.main.name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.ingest.name
            }
          }
        }
      }

      metrics {
        id          = "backlog_per_task"
        label       = "Queued and in-flight messages per running ingest task"
        expression  = "(visible + in_flight) / tasks"
        return_data = true
      }
    }
  }
}

# 0 -> 1: when messages wait and no consumer runs.
resource "aws_appautoscaling_policy" "ingest_from_zero" {
  name               = "${local.name}-ingest-start-from-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.ingest.service_namespace
  scalable_dimension = aws_appautoscaling_target.ingest.scalable_dimension
  resource_id        = aws_appautoscaling_target.ingest.resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "ingest_from_zero" {
  alarm_name          = "${local.name}-ingest-messages-waiting-no-consumer"
  alarm_description   = "Messages are visible in ${aws_sqs_queue.ingest.name} and no ingest task runs: start one."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.ingest_from_zero.arn]

  metric_query {
    id          = "visible"
    return_data = false
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.ingest.name }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id          = "tasks"
    return_data = false
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "RunningTaskCount"
      dimensions = {
        ClusterName = aws_ecs_cluster.main.name
        ServiceName = aws_ecs_service.ingest.name
      }
      period = 60
      stat   = "Maximum"
    }
  }

  metric_query {
    id          = "waiting_without_consumer"
    label       = "1 when messages are visible and no ingest task runs"
    expression  = "IF(visible > 0 AND FILL(tasks, 0) == 0, 1, 0)"
    return_data = true
  }
}

# ---------------------------------------------------------------- query
resource "aws_appautoscaling_target" "query" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = local.query_resource_id
  min_capacity       = var.query_min_count
  max_capacity       = var.query_max_count
}

resource "aws_appautoscaling_policy" "query_cpu" {
  name               = "${local.name}-query-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.query.service_namespace
  scalable_dimension = aws_appautoscaling_target.query.scalable_dimension
  resource_id        = aws_appautoscaling_target.query.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.query_cpu_target
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
