"""gitlab-activity-exporter: per-user GitLab activity as Prometheus metrics."""

__version__ = "0.1.0"
