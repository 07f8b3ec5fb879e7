"""Importers of published text-to-motion assets (bring your own files): each maps a released checkpoint's keys and
shapes onto the project modules that express the released architecture (``easytune.core.models.released_*``).

Files are untrusted: tensors and plain containers only (``torch.load(weights_only=True)``; pickled word lists through
an allow-list unpickler); a wrong file, a missing or extra key or a wrong shape is one :class:`PublishedAssetError`
naming the file and the key.

- :mod:`.containers`: safe reading (``load_tensor_file``, ``load_plain_pickle``) and key-by-key matching;
- :mod:`.mld`: ``import_mld`` (CLIP MLD, T5 MLD, MotionLCM v1); :mod:`.mdm`: ``import_mdm`` (``model*.pt`` + args.json);
- :mod:`.t2m_evaluator`: the standard T2M evaluator (``finest.tar``, GloVe);
- :mod:`.text_encoders`: ``ClipTextFeatures`` (MLD), ``SentenceT5Features`` (MotionLCM / EasyTune MLD and the SPM's
  token states), ``MDMClipTextFeatures`` (MDM), ``DistilbertTokenFeatures`` (TMR), each from a local folder;
- :mod:`.spm`: ``import_spm`` (EasyTune's SPM reward, ``checkpoints/spm/<name>.pth``) onto ``ReleasedSPM``, whose
  ``reward`` is the per-sample cosine (B,) of latent means (or the release's sampled latents);
- :mod:`.tmr`: ``import_tmr`` (``last_weights/*.pt`` + TMR's mean/std) and ``tmr_score``.
"""
