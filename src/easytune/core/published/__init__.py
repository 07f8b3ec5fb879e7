"""Importers of published text-to-motion assets (bring your own files): each maps a released checkpoint's keys and
shapes onto the project modules that express the released architecture (``easytune.core.models.released_*``).

Files are untrusted: tensors and plain containers only (``torch.load(weights_only=True)``; pickled word lists through
an allow-list unpickler); a wrong file, a missing or extra key or a wrong shape is one :class:`PublishedAssetError`
naming the file and the key.
"""
