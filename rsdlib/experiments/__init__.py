"""Experiments: the orchestration that uses every layer of the library.

Nothing below imports from here; notebooks and scripts do. What lives here:

- the training recipe, in three stages, each usable alone (``scripts/train_policies.py`` runs them;
  notebook ``03_train_policies`` runs them on a smoke profile): :mod:`~rsdlib.experiments.prepare`
  (split by episode, fit the tokenizers, pack), :mod:`~rsdlib.experiments.train_models` (train
  every model, resumable, on a CPU or a GPU), :mod:`~rsdlib.experiments.cards` (a card per model);
  :mod:`~rsdlib.experiments.validation` (the metrics they report) and
  :mod:`~rsdlib.experiments.distill` (the head drafter fine-tuned on the main policy's tokens);
- :mod:`~rsdlib.experiments.benchmark`: every decoding method on the same observations (acceptance,
  passes, latency side by side);
- :mod:`~rsdlib.experiments.comparison`: every method as a LIBERO policy from a models folder;
- :mod:`~rsdlib.experiments.ambiguity`: which target each rollout of a two-target scene committed to;
- :mod:`~rsdlib.experiments.paper`: the paper's figures from saved results, and the figures' manifest.
"""
