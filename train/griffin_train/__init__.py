"""PyTorch training pipeline for Griffin / Hawk / MQA-Transformer models (issue 3).

Modules: config (model configs and presets), model (the network, SPEC.md semantics), scan (RG-LRU
scans: loop reference, parallel PyTorch, Triton), data (corpus, tokenizer, token files, packing),
train (the trainer), export (Hugging Face RecurrentGemma layout).
"""
