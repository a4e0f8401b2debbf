terraform {
  required_version = ">= 1.5.0"

  required_providers {
    # Only the AWS provider: no random/null/archive providers are needed.
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 6.0"
    }
  }

  # State: configure a remote backend for real use, e.g. with `terraform init -backend-config=...`
  # and an S3 backend block here (see deploy/README.md). Without one, state is local.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
