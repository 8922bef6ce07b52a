"""The peer benchmark (PyTorch + Hugging Face transformers) on any torch device, for ratios against
`lm-cli bench --device cuda`: the same measurement as ../shared/bench/qwen2_peer.py (which is CPU-only),
with the device, the model preset and the training shape as arguments.

    python3 scripts/peer_bench.py --device cuda                                   # bench-3m, 16 x 256
    python3 scripts/peer_bench.py --device cuda --preset paper-100m --seq 1024     # the paper's 100M model
    lm-cli bench --device cuda --dp 1 [--preset paper-100m --seq 1024]            # ours, same shapes

Both sides: f32 weights and activations, AdamW (lr 3e-4, wd 0.1), global-norm clip 1.0, mean of training
steps 3..8; sampling batch 64, prompt 16, 240 new tokens, temperature 1.0, KV cache, after one short warm-up
generation (GPU kernels are compiled or autotuned on first use on both sides). Every timed step ends with a
device synchronisation (the loss is read back).
"""
import argparse, json, time

import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

# Keep in sync with crates/lm/src/config.rs (ModelConfig::preset).
PRESETS = {
    "bench-3m": dict(vocab_size=512, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=688, max_position_embeddings=1024),
    "paper-100m": dict(vocab_size=2200, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       num_key_value_heads=2, intermediate_size=3072, max_position_embeddings=2048),
}
TRAIN_STEPS, WARMUP = 8, 2
GEN_BATCH, GEN_PROMPT, GEN_NEW = 64, 16, 240


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="bench-3m", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch default")
    ap.add_argument("--json", help="also write the results as JSON to this path")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = Qwen2Config(**PRESETS[args.preset], rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True,
                      attn_implementation="sdpa")
    model = Qwen2ForCausalLM(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"peer {args.preset}: {n_params} params, device {name}, torch {torch.__version__}, "
          f"tf32 matmul {torch.backends.cuda.matmul.allow_tf32}")

    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    times = []
    for _ in range(TRAIN_STEPS):
        x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), device=device)
        sync(device)
        t0 = time.perf_counter()
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - t0)
        print(f"  train step loss {loss.item():.4f} {times[-1]:.4f}s")
    step = sum(times[WARMUP:]) / len(times[WARMUP:])
    train_tps = args.batch * args.seq / step
    print(f"RESULT train tok/s={train_tps:.0f} step_s={step:.4f}")

    model.eval()
    prompt = torch.randint(0, cfg.vocab_size, (GEN_BATCH, GEN_PROMPT), device=device)

    def generate(new):
        return model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                              top_k=0, top_p=1.0, max_new_tokens=new, min_new_tokens=new, use_cache=True,
                              pad_token_id=0)

    with torch.no_grad():
        generate(8)
        sync(device)
        t0 = time.perf_counter()
        out = generate(GEN_NEW)
        sync(device)
        dt = time.perf_counter() - t0
    new = out.shape[1] - GEN_PROMPT
    sample_tps = GEN_BATCH * new / dt
    print(f"RESULT sample tok/s={sample_tps:.0f} new={new} seconds={dt:.2f}")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    print(f"RESULT peak_device_bytes={peak} ({peak / 2**20:.0f} MiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(preset=args.preset, device=name, params=n_params, batch=args.batch, seq=args.seq,
                           train_tokens_per_s=train_tps, sample_tokens_per_s=sample_tps,
                           peak_device_bytes=peak), f, indent=2)


if __name__ == "__main__":
    main()
