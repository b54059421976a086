"""One bulk job, decided before any model is loaded: input, output, task, options and what a
resumed run may skip. Both runners take a Plan."""
from __future__ import annotations

import dataclasses
import os

from ..settings import ModelSettings
from .inputs import Fields, Source
from .job import JobOptions, engine_settings
from .outputs import Parts, output_format
from .progress import Progress


@dataclasses.dataclass
class Plan:
    source: Source
    output: str
    options: JobOptions
    settings: ModelSettings
    chunk_rows: int
    resume: bool
    quiet: bool
    parts: Parts = dataclasses.field(init=False)

    def __post_init__(self):
        self.format = output_format(self.output)
        self.engine_settings = engine_settings(self.settings, self.chunk_rows)
        stat = os.stat(self.source.path)
        manifest = {
            "input": os.path.abspath(self.source.path),
            "input_size": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns,
            "chunk_rows": self.chunk_rows,
            "fields": dataclasses.asdict(self.source.fields),
            "options": dataclasses.asdict(self.options),
            "model": [self.settings.model_id, self.settings.revision, self.settings.pooling, self.settings.dtype],
        }
        self.parts = Parts(self.output, manifest, self.resume)

    @property
    def fields(self) -> Fields:
        return self.source.fields

    def progress(self) -> Progress:
        unit = "requests" if self.options.task == "openai" else "texts"
        return Progress(self.source.count_rows(), self.quiet, unit)

    def finish(self, progress: Progress) -> str:
        counts = self.parts.finish(self.format, self.source.id_name)
        return progress.close(counts["rows"], counts["errors"], self.output)
