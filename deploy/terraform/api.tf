# API Gateway HTTP API -> VPC link -> Cloud Map (SRV) -> query tasks on port 8080.
# Authentication is the query service's own (HIRING_API_KEYS; /healthz and /readyz are public);
# API Gateway adds TLS, throttling and access logs.
# Limits of API Gateway to know: 10 MB request bodies (POST /upload of larger files: put them in
# the bucket directly) and 30 s per request.

resource "aws_apigatewayv2_api" "http" {
  name          = local.name
  description   = "The ${local.name} query API"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_vpc_link" "query" {
  name               = "${local.name}-query"
  subnet_ids         = aws_subnet.app[*].id
  security_group_ids = [aws_security_group.vpc_link.id]
}

resource "aws_apigatewayv2_integration" "query" {
  api_id                 = aws_apigatewayv2_api.http.id
  description            = "The query service through Cloud Map"
  integration_type       = "HTTP_PROXY"
  integration_method     = "ANY"
  connection_type        = "VPC_LINK"
  connection_id          = aws_apigatewayv2_vpc_link.query.id
  integration_uri        = aws_service_discovery_service.query.arn
  payload_format_version = "1.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "default" {
  #checkov:skip=CKV_AWS_309: the query service authenticates every request itself (HIRING_API_KEYS, bearer or X-API-Key) and must keep /healthz and /readyz public; an API Gateway authorizer would duplicate that check
  api_id             = aws_apigatewayv2_api.http.id
  route_key          = "$default"
  target             = "integrations/${aws_apigatewayv2_integration.query.id}"
  authorization_type = "NONE"
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.http.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.api_throttling_rate_limit
    throttling_burst_limit = var.api_throttling_burst_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      ip                 = "$context.identity.sourceIp"
      requestTime        = "$context.requestTime"
      httpMethod         = "$context.httpMethod"
      path               = "$context.path"
      status             = "$context.status"
      protocol           = "$context.protocol"
      responseLength     = "$context.responseLength"
      integrationStatus  = "$context.integrationStatus"
      integrationLatency = "$context.integrationLatency"
      integrationError   = "$context.integrationErrorMessage"
    })
  }
}
