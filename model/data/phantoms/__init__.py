"""Phantom MR-MedSeg: synthetic medical images, entity masks and multi-round dialogues.

``scenes`` draws an image and its labelled entities per modality, ``knowledge`` holds the
relations between entities and their phrasings, ``dialogues`` turns a scene into conversations,
``generate`` writes a whole dataset in the MR-MedSeg format.
"""
