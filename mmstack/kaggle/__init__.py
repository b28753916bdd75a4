"""Kaggle kernel submission, offline: package a kernel with its wheels (and a run's artifacts), check it locally.

``mmstack kaggle package`` writes three folders ready for the kaggle CLI (``kernel/``, ``code/``, ``artifacts/``);
``mmstack kaggle check`` validates their metadata, installs the code dataset into a fresh Python 3.12 virtual
environment with ``--no-index`` and runs the kernel script with the network cut off against a fake
``/kaggle/input``. The rules both follow are in ``../shared/FACTS.md`` section 6.
"""
