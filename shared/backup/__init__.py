"""Backup and restore of the data tables as Apache Avro (CONTRACT §6), shared by `hiring backup` /
`hiring restore` and the query service's `POST /backups` / `POST /tables/{table}/restore`.

A backup is a folder (a directory or an S3 prefix) holding one Avro object container file per table
(`<table>.avro`) and `manifest.json`. A restore never writes a table itself: it turns the backup's
rows into one CSV snapshot object in the raw bucket, which the ingest consumer applies as a
whole-table replacement, so the restore is an event in the bucket's history like any upload.
"""
