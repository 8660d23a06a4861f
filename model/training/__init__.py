"""Training MediRound: the stages, the one loop that runs a stage, the recipes that chain them.

- ``stages.py``      what each stage trains, reads and minimises (``Stage`` and its four kinds);
- ``mixture.py``     what a stage reads: phantoms and the real brain in a fixed share (``TrainingData``);
- ``registry.py``    the stages by name: the one place a recipe's stage name becomes a ``Stage``;
- ``loop.py``        ``fit``: one stage, in-process or as one data-parallel worker (``StageSettings``);
- ``distributed.py`` one stage on N Ray Train workers;
- ``recipe.py``      data, tokenizer and every stage in order, resumable (``mediround train recipe``);
- ``losses.py``      the objective's terms: text CE, mask BCE and Dice, the judge's IoU target.
"""
