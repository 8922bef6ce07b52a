"""Compare our logits with transformers' Qwen2ForCausalLM on an exported checkpoint.

    cargo xtask export-tiny /tmp/tiny && ../peer-venv/bin/python scripts/hf_parity.py /tmp/tiny

The directory holds model.safetensors + config.json + tokenizer.json (HF layout, written by the `lm` crate),
parity_inputs.json (fixed token ids) and parity_logits.safetensors (our logits on them). Prints the maximum
absolute difference and exits non-zero when it exceeds 1e-4 (f32).
"""
import json, sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

BOUND = 1e-4


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hf_parity.py CHECKPOINT_DIR")
    d = Path(sys.argv[1])
    model = Qwen2ForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.tensor(json.loads((d / "parity_inputs.json").read_text())["input_ids"], dtype=torch.long)
    ours = load_file(d / "parity_logits.safetensors")["logits"]
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
    assert theirs.shape == ours.shape, (theirs.shape, ours.shape)
    diff = (theirs - ours).abs().max().item()
    # The tokenizer must load in transformers and agree with the ids we encoded (row 0 is real text).
    tok = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    text = tok.decode(ids[0].tolist())
    assert tok(text, add_special_tokens=False)["input_ids"] == ids[0].tolist(), "tokenizer round trip differs"
    print(f"params={sum(p.numel() for p in model.parameters())} inputs={tuple(ids.shape)} max_abs_diff={diff:.3e}")
    if not diff <= BOUND:
        print(f"FAIL: max abs diff {diff:.3e} > {BOUND:.0e}")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
