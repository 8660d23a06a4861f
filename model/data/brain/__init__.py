"""Real-brain MR-MedSeg: slices of the Colin27 T1 MRI, AAL structure masks and multi-round dialogues.

``volume`` reads the T1 volume and the AAL atlas and cuts display-ready slices, ``anatomy`` is the
curated table (names, left/right pairs, groups, facts), ``scene`` turns one slice into labelled
entities, ``knowledge`` holds the relations a question can ask for and their phrasings, ``splits``
says which slabs of the volume each split may use, ``generate`` writes a whole dataset and
``augment`` draws training views (intensity, rotation, scale, left-right flip with its words).
The data come from Debian's ``mricron-data`` (see PROVENANCE.md); nothing of it is committed.
"""
