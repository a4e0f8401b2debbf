# The one image both services run from (Dockerfile at the repository root).
resource "aws_ecr_repository" "app" {
  #checkov:skip=CKV_AWS_51: the deploy tag (var.image_tag) is moved by the pipeline on each release; every build is also pushed under its commit id, and ECS pins the digest per deployment
  name                 = "${local.name}-pipeline"
  image_tag_mutability = "MUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_lifecycle_policy" "app" {
  repository = aws_ecr_repository.app.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Forget untagged images after 7 days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 7
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the 50 most recent builds"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = 50
        }
        action = { type = "expire" }
      },
    ]
  })
}

# Base images through ECR: a pull-through cache of ECR Public (which mirrors Docker Hub's official
# images, e.g. docker/library/python, and needs no upstream credentials). The first pull of an image
# creates its repository under `ecr-public/` and imports it: the puller needs
# ecr:CreateRepository and ecr:BatchImportUpstreamImage on those repositories (cicd.tf), without
# which the cache fails with a "not authorized" error instead of falling back.
resource "aws_ecr_pull_through_cache_rule" "ecr_public" {
  ecr_repository_prefix = "ecr-public"
  upstream_registry_url = "public.ecr.aws"
}

locals {
  base_image_cache = "${local.account_id}.dkr.ecr.${local.region}.amazonaws.com/${aws_ecr_pull_through_cache_rule.ecr_public.ecr_repository_prefix}"
  base_image       = var.base_image != "" ? var.base_image : "${local.base_image_cache}/docker/library/python:3.11-slim-bookworm"
}
