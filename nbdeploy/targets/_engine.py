"""Moved to ``nbdeploy.images.engines`` (public: ``nbdeploy.images``); this name is that very module, kept for
old imports (and so a test's ``monkeypatch`` of it still reaches every caller)."""

from __future__ import annotations

import sys

from ..images import engines

sys.modules[__name__] = engines
