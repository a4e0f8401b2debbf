# Who may talk to whom:
#   API Gateway VPC link --8080--> query tasks
#   query, ingest tasks --5432--> RDS
#   query, ingest tasks --443--> AWS APIs (through the NAT gateway or VPC endpoints) and OTLP/HTTPS

resource "aws_security_group" "vpc_link" {
  name        = "${local.name}-api-vpc-link"
  description = "API Gateway VPC link to the query service"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "query" {
  name        = "${local.name}-query"
  description = "Query API tasks"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "ingest" {
  name        = "${local.name}-ingest"
  description = "Ingest consumer tasks"
  vpc_id      = aws_vpc.main.id
}

resource "aws_security_group" "db" {
  name        = "${local.name}-db"
  description = "PostgreSQL, reachable from the tasks only"
  vpc_id      = aws_vpc.main.id
}

resource "aws_vpc_security_group_egress_rule" "vpc_link_to_query" {
  security_group_id            = aws_security_group.vpc_link.id
  description                  = "API traffic to the query tasks"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.query.id
}

resource "aws_vpc_security_group_ingress_rule" "query_from_vpc_link" {
  security_group_id            = aws_security_group.query.id
  description                  = "API traffic from the API Gateway VPC link"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.vpc_link.id
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  for_each = {
    query  = aws_security_group.query.id
    ingest = aws_security_group.ingest.id
  }

  security_group_id = each.value
  description       = "HTTPS to AWS APIs (S3, SQS, ECR, Secrets Manager, CloudWatch) and the OTLP endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "tasks_db" {
  for_each = {
    query  = aws_security_group.query.id
    ingest = aws_security_group.ingest.id
  }

  security_group_id            = each.value
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_tasks" {
  for_each = {
    query  = aws_security_group.query.id
    ingest = aws_security_group.ingest.id
  }

  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the ${each.key} tasks"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}
