"""The main job: a streaming, resumable, multi-stage pipeline over Ray actors (`synth run`)."""

from synth.pipeline.driver import PipelineDriver, RunSummary, run_identity

__all__ = ["PipelineDriver", "RunSummary", "run_identity"]
