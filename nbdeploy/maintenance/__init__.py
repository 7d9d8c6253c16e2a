"""Keep a deployment healthy by itself: alert rules judged by a scheduler process, notifications, and retraining
that goes through the offline gate, a shadow and the promotion rules (``Deployment.maintain``)."""

from __future__ import annotations

from .handle import HISTORY_ACTIONS, Maintenance, maintain
from .retrain import RetrainData
from .rules import AlertRule
from .sinks import Webhook, verify_signature

__all__ = ["HISTORY_ACTIONS", "AlertRule", "Maintenance", "RetrainData", "Webhook", "maintain", "verify_signature"]
