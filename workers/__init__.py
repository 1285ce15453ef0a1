"""The Celery worker process: thin tasks over espi/ and cds/."""
