"""The generation layer every wire format calls; no FastAPI and no wire types here.

``Generation`` (``generation.service``) renders prompts, turns a ``SamplingRequest`` into engine
parameters, runs one or ``n`` choices and merges their outputs, split into reasoning and answer
(``generation.outputs``); ``generation.usage`` adds up usage and whole choices; the caller passes
a ``Meter`` for usage records. ``generation.bounds`` holds the one definition of every sampling
setting's range, which the OpenAI schemas, the Ollama options, the simple endpoints and the
conversation settings all use. The wire formats (``api.service`` for OpenAI, ``api.routes.ollama``)
only map their requests onto these calls and the outputs onto their responses.
"""

from r1serve.generation.metering import Meter
from r1serve.generation.outputs import (
    ENGINE_FAILED,
    REPETITION,
    Output,
    ToolCallDelta,
    engine_failed,
)
from r1serve.generation.sampling import SamplingRequest, sampling_params
from r1serve.generation.service import Generation, ReasoningFormat
from r1serve.generation.usage import Choice, Completed, UsageTotal, collect

__all__ = [
    "ENGINE_FAILED",
    "REPETITION",
    "Choice",
    "Completed",
    "Generation",
    "Meter",
    "Output",
    "ReasoningFormat",
    "SamplingRequest",
    "ToolCallDelta",
    "UsageTotal",
    "collect",
    "engine_failed",
    "sampling_params",
]
