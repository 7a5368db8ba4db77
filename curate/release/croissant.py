"""croissant.json: the release described in MLCommons Croissant, built with
mlcroissant and validated by loading it back (mlcroissant raises on errors).

One FileSet and one RecordSet per config, a field per scalar column (word
lists and other nested columns are described in the card and the schema
files; Croissant's nested fields add little for a Parquet reader).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa

_TYPES = {"string": "TEXT", "double": "FLOAT64", "float": "FLOAT32", "int32": "INT32", "int64": "INT64",
          "bool": "BOOL"}


def _data_type(t: pa.DataType):
    import mlcroissant as mlc

    if pa.types.is_timestamp(t):
        return mlc.DataType.DATE
    name = _TYPES.get(str(t))
    return getattr(mlc.DataType, name) if name else None


def build(out: Path, name: str, description: str, license: str, version: str, url: str | None,
          citation: str | None, configs: dict[str, dict[str, list[str]]], schemas: dict[str, pa.Schema]) -> Path:
    import mlcroissant as mlc

    distribution, record_sets = [], []
    for config, by_split in configs.items():
        fs_id = f"{config}-parquet"
        distribution.append(mlc.FileSet(id=fs_id, name=fs_id, encoding_formats=["application/x-parquet"],
                                        includes=f"data/{config}/*.parquet",
                                        description=f"{config}: splits {', '.join(by_split)}"))
        fields = []
        for field in schemas[config]:
            dtype = _data_type(field.type)
            if dtype is None:
                continue
            fields.append(mlc.Field(id=f"{config}/{field.name}", name=field.name, data_types=[dtype],
                                    description=(field.metadata or {}).get(b"description", b"").decode(),
                                    source=mlc.Source(file_set=fs_id, extract=mlc.Extract(column=field.name))))
        record_sets.append(mlc.RecordSet(id=config, name=config, fields=fields,
                                         description=f"rows of the {config} config"))
    metadata = mlc.Metadata(name=name, description=description or name, license=[license], version=version,
                            url=url or "https://example.invalid/not-published",
                            cite_as=citation or f"{name}, version {version}, built with curate",
                            date_published=dt.datetime.now(dt.timezone.utc),
                            distribution=distribution, record_sets=record_sets)
    path = out / "croissant.json"
    path.write_text(json.dumps(metadata.to_json(), indent=2, default=str) + "\n")
    validate(path)
    return path


def validate(path: Path) -> None:
    """Raise (mlcroissant's ValidationError) when the file has errors."""
    import mlcroissant as mlc

    mlc.Dataset(jsonld=str(path))
