"""common: the ground floor every synthface package may import, and which imports none of them.

* :mod:`common.config`: dataclass-from-dict conversion, dotted ``KEY=VALUE`` overrides, path
  resolution, :data:`~common.config.REPO_ROOT`;
* :mod:`common.cli`: the flags every command shares (``--config``, ``-o/--override``, ``--out``,
  ``--fresh``, ``--threads``, ``-q``), config-file loading and the error -> exit-code wrapper;
* :mod:`common.errors`: :class:`~common.errors.SynthfaceError` (the one base of user-facing errors,
  e.g. :class:`~common.errors.ConfigError`) and the exit codes of the command lines;
* :mod:`common.io`: atomic file writes (bytes, text, ``torch.save``, any writer);
* :mod:`common.memory`: the render workers' allocator setting (freed memory kept for reuse);
* :mod:`common.align`: the ArcFace 5-point alignment template;
* :mod:`common.metrics`: verification metrics shared by FR evaluation and generator evaluation (ROC,
  EER); :mod:`common.plots`: figures without pyplot, genuine/impostor score histograms;
* :mod:`common.people`: LFW ``pairs.txt``, ``#synthface-pairs v1`` pair lists, people files and the pairs-folds people subset config;
* :mod:`common.progress`, :mod:`common.checkpoint`: the training progress line and the atomic
  ``last.ckpt`` callback (Lightning);
* :mod:`common.prefetch`: a background producer thread (:class:`~common.prefetch.Prefetch`) and the
  batch-to-device prefetcher of the trainer (:class:`~common.prefetch.DevicePrefetcher`).

Import rule: ``common`` imports only the standard library and third-party packages, never
``engine``, ``morphable``, ``learned`` or ``training``. This ``__init__`` imports nothing, so
``import common.config`` stays light.
"""
