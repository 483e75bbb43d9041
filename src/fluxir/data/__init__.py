"""The data layer shared by every stage.

- :mod:`fluxir.data.images`: ``load_rgb`` (safe decode to H x W x 3 uint8, ``ImageDecodeError``),
  ``write_image_atomic`` (returns the file's sha256), ``list_images`` (by ``IMAGE_SUFFIXES``),
  uint8/float conversions (``to_uint8`` is also the degradation chain's).
- :mod:`fluxir.data.manifest`: ``read_manifest`` / ``write_manifest`` (Parquet, atomic; the ``path``
  column is absolute in memory and relative to the manifest's folder on disk), ``shard_relpath``.
- :mod:`fluxir.data.paths`: ``check_id`` and ``resolve_inside`` / ``check_inside``: ids are plain names,
  and every path from a data file (manifest, record, shard folder, S3 key) stays inside its root.
- :mod:`fluxir.data.validate`: ``validate_manifest(df, kind, report_dir)`` (great-expectations suite per
  manifest kind; raises ``ManifestValidationError`` naming the row and the expectation),
  ``read_validated`` (read + validate, how a stage reads its input), ``register_kind``.
- :mod:`fluxir.data.ingest`: ``ingest_folder`` (real photos -> RGB images in shards, bad files listed).
"""
