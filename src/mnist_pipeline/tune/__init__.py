"""Tune the pipeline with Optuna: every trial one ``dvc exp run``, on one machine or many.

An ask-and-tell loop (:mod:`.study`) samples overrides from a search space in ``conf/tune/``
(:mod:`.space`), runs each trial as ``dvc exp run --temp -n <study>-t<NNN> -S ...``
(:mod:`.experiment`), and tells Optuna the experiment's validation accuracy (never test). The
study lives in an Optuna journal file under ``.dvc/tmp/tune/`` or, for workers on many
machines, in PostgreSQL (:mod:`.storage`); every worker runs the same command. At the end it
prints the ranked trials and the best one's ``dvc exp apply`` command (:mod:`.report`).

Run: ``python -m mnist_pipeline.tune [--trials 30] [--minutes 30] [--storage postgresql://...]``
(or ``make tune ARGS=...``); see docs/tuning.md.
"""
