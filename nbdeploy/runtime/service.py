"""The BentoML service every nbdeploy bento runs. Its name comes from the artifact's metadata."""

from __future__ import annotations

import typing as t
from pathlib import Path

import bentoml

from .model import Predictor, read_meta
from .schema import InputError

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "artifact"
META = read_meta(ARTIFACT_DIR)


@bentoml.service(name=META["service_name"], workers=1, traffic={"timeout": 60})
class NbdeployService:
    def __init__(self) -> None:
        self.predictor = Predictor(ARTIFACT_DIR)

    @bentoml.api(route="/predict")
    def predict(self, inputs: t.Any, ctx: bentoml.Context) -> dict[str, t.Any]:
        try:
            return {"predictions": self.predictor.predict(inputs)}
        except InputError as exc:
            ctx.response.status_code = 400
            return {"error": str(exc)}
