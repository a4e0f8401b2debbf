# The raw bucket (S3_RAW_BUCKET): every CSV created in it is ingested (CONTRACT §2).
# Versioned (each object version is applied once; `hiring replay` reads the versions), encrypted
# with the stack's key, private, TLS-only, and it notifies the ingest queue of every object created
# or removed.

resource "aws_s3_bucket" "raw" {
  #checkov:skip=CKV_AWS_18: server access logs need a separate log bucket; object-level audit belongs to the account's CloudTrail data events, not to this stack
  #checkov:skip=CKV_AWS_144: cross-region replication is a DR choice left out by default; the bucket is versioned and its data can be re-uploaded
  bucket = var.raw_bucket_name
}

resource "aws_s3_bucket_ownership_controls" "raw" {
  bucket = aws_s3_bucket.raw.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "raw" {
  bucket                  = aws_s3_bucket.raw.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "raw" {
  bucket = aws_s3_bucket.raw.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "raw" {
  bucket = aws_s3_bucket.raw.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "raw" {
  bucket = aws_s3_bucket.raw.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  # Older versions are kept (replay and audit) but moved to a cheaper class.
  rule {
    id     = "noncurrent-to-infrequent-access"
    status = "Enabled"
    filter {}
    noncurrent_version_transition {
      noncurrent_days = 30
      storage_class   = "STANDARD_IA"
    }
  }

  # Backups (backup.tf) expire after var.backup_retention_days; nothing outside backups/ does.
  rule {
    id     = "expire-backups"
    status = "Enabled"
    filter {
      prefix = "backups/"
    }
    expiration {
      days = var.backup_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.raw]
}

resource "aws_s3_bucket_policy" "raw" {
  bucket = aws_s3_bucket.raw.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.raw.arn, "${aws_s3_bucket.raw.arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyOutdatedTls"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [aws_s3_bucket.raw.arn, "${aws_s3_bucket.raw.arn}/*"]
        Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
      },
    ]
  })

  depends_on = [aws_s3_bucket_public_access_block.raw]
}

resource "aws_s3_bucket_notification" "raw" {
  bucket = aws_s3_bucket.raw.id

  # services/dev/provisioning.py makes the same for hiring dev and compose (a test compares them).
  # Created and removed: a delete marker or a deleted version retracts what the object contributed.
  # No suffix filter: filters are case-sensitive and one suffix each (`.csv` would drop `JOBS.CSV`
  # and `2021.csv.gz` silently); the consumer records every key it skips, with the reason.
  queue {
    id        = "raw-objects-to-ingest-queue"
    queue_arn = aws_sqs_queue.ingest.arn
    events    = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
  }

  # S3 checks that it may send to the queue when the notification is put.
  depends_on = [aws_sqs_queue_policy.ingest]
}
