#!/usr/bin/env python3
"""A model folder with recurrentgemma-2b (or 9b) shapes and no weights, for
`griffin-server --load_format=dummy` (random bf16 weights filled on the GPU):

    python3 bench/make_dummy_model.py /tmp/rg2b-dummy [--preset 2b|9b] [--weights]

writes config.json (the Hugging Face RecurrentGemma layout with the published checkpoint's
values), tokenizer.model (a synthetic SentencePiece BPE model with exactly vocab_size pieces and
Gemma's special ids) and README.md. The output is byte-identical on every run. Needs
sentencepiece and protobuf (sentencepiece's own sentencepiece_model_pb2 builds the model).

With --weights it also writes model.safetensors: every tensor of the architecture with random
bf16 values (seeded, so also byte-identical), a real 5.4 GB (2B) checkpoint file for measuring
what loading costs (time, host memory). It is written tensor by tensor, so the script's memory
stays near one tensor's size. Needs numpy.
"""

import argparse
import itertools
import json
import random
import sys
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

# google/recurrentgemma-2b's config.json (shared/SPEC.md §1.2); engine/griffin_model.cc's
# RecurrentGemma2B() holds the same shapes (mlp_width = intermediate_size / 2).
CONFIG_2B = {
    "architectures": ["RecurrentGemmaForCausalLM"],
    "model_type": "recurrent_gemma",
    "hidden_size": 2560,
    "intermediate_size": 15360,
    "num_hidden_layers": 26,
    "num_attention_heads": 10,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "lru_width": 2560,
    "vocab_size": 256000,
    "attention_window_size": 2048,
    "conv1d_width": 4,
    "logits_soft_cap": 30.0,
    "partial_rotary_factor": 0.5,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-06,
    "embeddings_scale_by_sqrt_dim": True,
    "hidden_activation": "gelu_pytorch_tanh",
    "attention_bias": False,
    "attention_dropout": 0.0,
    # The Hub file spells it "_block_types"; transformers' class takes "block_types". The
    # server's loader accepts either and rejects the pair when they disagree.
    "block_types": ["recurrent", "recurrent", "attention"],
    "_block_types": ["recurrent", "recurrent", "attention"],
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}

# RecurrentGemma9B(): only the widths, depth and head count differ (head_dim stays 256).
CONFIG_9B = dict(CONFIG_2B, hidden_size=4096, intermediate_size=24576, num_hidden_layers=38,
                 num_attention_heads=16, lru_width=4096)

PRESETS = {"2b": CONFIG_2B, "9b": CONFIG_9B}

# Gemma's order and ids, which config.json's pad/eos/bos ids and the server assume.
SPECIALS = [("<pad>", "CONTROL"), ("<eos>", "CONTROL"), ("<bos>", "CONTROL"), ("<unk>", "UNKNOWN")]
MAX_PIECE_CHARS = 10
SEED = 20261129

# English letter frequencies (per mille), so that merged pieces look roughly like word fragments
# and common letters end up in more of them.
LETTER_WEIGHTS = dict(zip("etaoinshrdlcumwfgypbvkjxqz",
                          [127, 91, 82, 75, 70, 67, 63, 61, 60, 43, 40, 28, 28, 24, 24, 22, 20, 20,
                           19, 15, 10, 8, 2, 2, 1, 1]))
DIGITS = "0123456789"
PUNCTUATION = ".,;:!?'\"()[]{}-_/\\&%$#@*+=<>|~`^"


def base_pieces():
    """Single characters: the symbols BPE starts from (anything else falls back to bytes)."""
    letters = sorted(LETTER_WEIGHTS, key=LETTER_WEIGHTS.get, reverse=True)
    return ["\u2581"] + letters + [c.upper() for c in letters] + list(DIGITS) + list(PUNCTUATION)


def merged_pieces(count, seed):
    """`count` unique pieces, each the concatenation of two earlier ones, in creation order.

    That is how a trained BPE vocabulary is built, so SentencePiece's BPE encoder (which merges
    adjacent symbols whose concatenation is a piece, highest score first) reaches long pieces
    through their halves. '▁' (the escaped space) only ever starts a piece, as in Gemma's vocabulary.
    """
    rng = random.Random(seed)
    pool = []
    # The special and byte pieces are spelt with base characters ("<0x41>", "<eos>"), so a merge
    # could rebuild one; SentencePiece refuses a model with a piece defined twice.
    seen = set(base_pieces()) | {p for p, _ in SPECIALS} | {f"<0x{b:02X}>" for b in range(256)}
    # Characters drawn by rough text frequency, so pieces read like word fragments ("▁ther",
    # "ing") rather than line noise; capitals, digits and punctuation are rare, as in text.
    chars = list(LETTER_WEIGHTS) + [c.upper() for c in LETTER_WEIGHTS] + list(DIGITS) + list(PUNCTUATION)
    weights = (list(LETTER_WEIGHTS.values()) + [w * 0.04 for w in LETTER_WEIGHTS.values()]
               + [1.0] * len(DIGITS) + [0.5] * len(PUNCTUATION))
    cum = list(itertools.accumulate(weights))

    def fragment():
        # Half the time a single character, otherwise an earlier piece; earlier pieces stand for
        # more frequent merges, hence index len * u^2.
        if not pool or rng.random() < 0.5:
            return rng.choices(chars, cum_weights=cum)[0]
        return pool[int(len(pool) * rng.random() ** 2)]

    while len(pool) < count:
        left = "\u2581" if rng.random() < 0.3 else fragment()
        right = fragment()
        if right.startswith("\u2581"):
            continue
        piece = left + right
        if len(piece) > MAX_PIECE_CHARS or piece in seen:
            continue
        seen.add(piece)
        pool.append(piece)
    return pool


def build_model(vocab_size, seed=SEED):
    """A ModelProto with exactly `vocab_size` pieces: specials, 256 bytes, then NORMAL pieces."""
    types = sp_pb2.ModelProto.SentencePiece.Type
    model = sp_pb2.ModelProto()

    def add(piece, kind, score):
        p = model.pieces.add()
        p.piece = piece
        p.score = score
        p.type = types.Value(kind)

    for piece, kind in SPECIALS:
        add(piece, kind, 0.0)
    for b in range(256):
        add(f"<0x{b:02X}>", "BYTE", 0.0)
    singles = base_pieces()
    normal_count = vocab_size - len(SPECIALS) - 256
    if normal_count < len(singles):
        raise SystemExit(f"vocab_size {vocab_size} is too small for the base alphabet")
    # Scores decrease along the vocabulary, as in a trained BPE model (score = -merge rank); the
    # single characters go last, where SentencePiece's BPE trainer puts them too.
    merged = merged_pieces(normal_count - len(singles), seed)
    for rank, piece in enumerate(merged + singles):
        add(piece, "NORMAL", -float(rank))

    spec = model.trainer_spec
    spec.model_type = sp_pb2.TrainerSpec.BPE
    spec.vocab_size = vocab_size
    spec.byte_fallback = True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 3, 2, 1, 0
    spec.unk_piece, spec.bos_piece, spec.eos_piece, spec.pad_piece = "<unk>", "<bos>", "<eos>", "<pad>"
    spec.split_digits = True
    # Gemma's normalizer: no NFKC, no dummy prefix, whitespace kept as is (escaped to '▁').
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return model


def verify(path, vocab_size):
    """Loads the file the way griffin-server's SentencePiece does and exercises it."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.GetPieceSize() == vocab_size, sp.GetPieceSize()
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert [sp.IdToPiece(i) for i in range(4)] == [p for p, _ in SPECIALS]
    assert sp.IsControl(1) and sp.IsUnknown(3) and sp.IsByte(4) and not sp.IsControl(300)
    rng = random.Random(1)
    ids = [rng.randrange(vocab_size) for _ in range(20000)]
    sp.DecodeIds(ids)
    for _ in range(50):
        sp.DecodeIds([rng.randrange(vocab_size) for _ in range(rng.randint(1, 64))])
    text = "The quick brown fox jumps over the lazy dog. Ünïcödé 漢字 🙂\n\ttabs  and  spaces 12345"
    encoded = sp.EncodeAsIds(text)
    assert sp.DecodeIds(encoded) == text, (text, sp.DecodeIds(encoded))
    return len(text), len(encoded)


README = """# Synthetic {preset} model folder (no weights)

Written by `python3 bench/make_dummy_model.py {out} --preset {preset}` for
`griffin-server --model {out} --load_format=dummy`, which fills every weight with random bf16
values on the GPU. It is for serving benchmarks only: the model's outputs are meaningless.

- `config.json`: google/recurrentgemma-{preset}'s shapes in the Hugging Face RecurrentGemma
  layout ({layers} layers, width {hidden}, vocab {vocab}).
- `tokenizer.model`: a synthetic SentencePiece BPE model, not Gemma's: {vocab} pieces with Gemma's
  special ids (pad 0, eos 1, bos 2, unk 3), 256 byte-fallback pieces (ids 4-259), then generated
  fragments of 1-{maxlen} characters. Any text encodes (bytes for what it lacks) and every id decodes.
"""


def tensor_shapes(config):
    """(name, shape) of every tensor of the Hugging Face layout (shared/SPEC.md §4.3), in order."""
    d, m = config["hidden_size"], config["intermediate_size"] // 2
    lru, heads, hd = config["lru_width"], config["num_attention_heads"], config["head_dim"]
    kv, k = config["num_key_value_heads"], config["conv1d_width"]
    block = lru // heads
    pattern = config["block_types"]
    out = [("model.embed_tokens.weight", (config["vocab_size"], d)), ("model.final_norm.weight", (d,))]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [(p + "temporal_pre_norm.weight", (d,)), (p + "channel_pre_norm.weight", (d,)),
                (p + "mlp_block.gate_proj.weight", (m, d)), (p + "mlp_block.gate_proj.bias", (m,)),
                (p + "mlp_block.up_proj.weight", (m, d)), (p + "mlp_block.up_proj.bias", (m,)),
                (p + "mlp_block.down_proj.weight", (d, m)), (p + "mlp_block.down_proj.bias", (d,))]
        if pattern[layer % len(pattern)] == "recurrent":
            t = p + "temporal_block."
            out += [(t + "linear_x.weight", (lru, d)), (t + "linear_x.bias", (lru,)),
                    (t + "linear_y.weight", (lru, d)), (t + "linear_y.bias", (lru,)),
                    (t + "linear_out.weight", (d, lru)), (t + "linear_out.bias", (d,)),
                    (t + "conv_1d.weight", (lru, 1, k)), (t + "conv_1d.bias", (lru,)),
                    (t + "rg_lru.recurrent_param", (lru,)),
                    (t + "rg_lru.input_gate_weight", (heads, block, block)),
                    (t + "rg_lru.input_gate_bias", (heads, block)),
                    (t + "rg_lru.recurrent_gate_weight", (heads, block, block)),
                    (t + "rg_lru.recurrent_gate_bias", (heads, block))]
        else:
            t = p + "temporal_block."
            out += [(t + "q_proj.weight", (heads * hd, d)), (t + "k_proj.weight", (kv * hd, d)),
                    (t + "v_proj.weight", (kv * hd, d)), (t + "o_proj.weight", (d, heads * hd)),
                    (t + "o_proj.bias", (d,))]
    return out


def write_random_weights(path, config, seed=SEED):
    """Streams random bf16 tensors into a safetensors file: N(0, 1/fan_in) for matrices, small
    values for norms and biases, and RG-LRU a_param around -4.3 (a in 0.9..0.999, as the paper's
    init). Values are bf16 bit patterns made from float32 normals (round to nearest even)."""
    import numpy as np

    shapes = tensor_shapes(config)
    header, offset = {}, 0
    for name, shape in shapes:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    rng = np.random.default_rng(seed)
    chunk = 1 << 24
    with open(path, "wb") as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for name, shape in shapes:
            n = int(np.prod(shape))
            if name.endswith("recurrent_param"):
                std, mean = 0.5, -4.3
            elif name.endswith("norm.weight"):
                std, mean = 0.1, 0.0
            elif name.endswith("bias"):
                std, mean = 0.02, 0.0
            else:
                std, mean = 1.0 / np.sqrt(shape[-1]), 0.0
            for start in range(0, n, chunk):
                x = rng.standard_normal(min(chunk, n - start), dtype=np.float32) * np.float32(std)
                x += np.float32(mean)
                bits = x.view(np.uint32)
                bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
                f.write(bits.astype("<u2").tobytes())
    return offset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output folder (created if missing)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="2b")
    parser.add_argument("--no-verify", action="store_true", help="skip loading the tokenizer back")
    parser.add_argument("--weights", action="store_true",
                        help="also write model.safetensors with random bf16 weights (5.4 GB for 2b)")
    args = parser.parse_args(argv)

    config = PRESETS[args.preset]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model = build_model(config["vocab_size"])
    tokenizer = out / "tokenizer.model"
    tokenizer.write_bytes(model.SerializeToString(deterministic=True))
    (out / "README.md").write_text(README.format(
        preset=args.preset, out=args.out, layers=config["num_hidden_layers"],
        hidden=config["hidden_size"], vocab=config["vocab_size"], maxlen=MAX_PIECE_CHARS))
    print(f"wrote {out}/config.json, {tokenizer} ({tokenizer.stat().st_size} bytes), {out}/README.md")
    if not args.no_verify:
        chars, tokens = verify(tokenizer, config["vocab_size"])
        print(f"verified: {config['vocab_size']} pieces, special ids 0-3, random ids decode, "
              f"{chars} characters -> {tokens} tokens round-trip")
    if args.weights:
        nbytes = write_random_weights(out / "model.safetensors", config)
        print(f"wrote {out}/model.safetensors ({nbytes / 1e9:.2f} GB of random bf16 weights)")


if __name__ == "__main__":
    sys.exit(main())
