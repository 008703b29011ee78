#!/usr/bin/python3
"""The PyTorch peer of bench_stage1_step: one BLIP-2 stage-1 training step, written from scratch in torch.

The computation of LAVIS's Blip2Qformer.forward (blip2_qformer.py) on given image embeddings, then one AdamW
update, in PyTorch eager, float32:
  image pass   the 32 queries through the Q-Former with cross-attention to the image (layers 0, 2, ...),
               keeping every layer's self-attention K/V of the queries (use_cache=True)
  text pass    the caption alone, padding mask; [CLS] row -> text_projection
  ITC          max over queries of image_feats . text_feat / temp; label-smoothed CE (0.1) both ways, averaged
  ITM          3B pairs (pos, neg image, neg text) through [queries ; text], bidirectional, padding masked;
               itm_head on the query rows, mean over queries; plain CE
  ITG          [DEC] (V - 1) replaces [CLS]; text-only pass over the cached query K/V, multimodal-causal mask;
               LM head (dense, GELU, LayerNorm, decoder tied to the word embeddings + bias) on all T rows,
               shift by one, pads ignored, label-smoothed CE (0.1)
  backward     of loss_itc + loss_itm + loss_itg; then torch.optim.AdamW (lr 1e-4, betas 0.9/0.98, eps 1e-8,
               weight decay 0.05 except LayerNorm weights/biases, biases, query_tokens and temp)
As LAVIS does, the cross-attention keys/values are projected from the image embeddings inside every pass
that cross-attends: B images in the image pass and again 3B in the ITM pass (the pairs' images), so 4B a
step. --kv-once instead projects the B images once and indexes them for the pairs (blip2cpp's algorithm).
The image embeddings are an input without gradient (LAVIS's ln_vision is not part of this step).

Weights, images and captions are not loaded: both programs generate them from the same counter-based hash
(peer_common.bits24 / values here, bits24 / unit in bench_common.hpp), parameter by parameter in blip2cpp's
for_each_parameter order, so the losses can be compared. ITM negatives: --neg-image/--neg-text fix them
(the comparison); --sample-negatives draws them as LAVIS does (softmax over the similarities with the
positives at -10000, torch.multinomial).

Prints progress lines, then one JSON object on one line (starting with {"peer") with the timings, the
first (warm-up) step's losses and gradient norm, the last step's losses, and the peak memory:
  stage1_step_torch.py --threads 2 [--layers 12] [--batch 8] [--text 32] [--dropout 0] [--reps 3]
                       [--neg-image 1,2,...] [--neg-text 7,0,...] [--sample-negatives] [--kv-once]
Run with /usr/bin/python3 (Debian's python3-torch).
"""
import argparse
import json
import math
import os
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from peer_common import IMAGE_ORDINAL, TEXT_ORDINAL, bits24, load_average, loaded_blas, ms_summary, values

# BLIP-2 sizes (Blip2QFormerConfig defaults, LAVIS's vocabulary with [DEC], EVA ViT-g image tokens)
C, NH, FFN, Q, N, E, FREQ, EPS, V, P, D = 768, 12, 3072, 32, 257, 1408, 2, 1e-12, 30523, 512, 256
HS = C // NH
CLS_ID, PAD_ID, DEC_ID = 101, 0, V - 1
LR = 1e-4


def param_specs(layers):
    """(name, shape) in blip2cpp's for_each_parameter order (text side and stage-1 heads included)."""
    s = [("query_tokens", (1, Q, C)), ("embeddings.word_embeddings.weight", (V, C)),
         ("embeddings.position_embeddings.weight", (P, C))]
    lin = lambda n, o, i: s.extend([(n + ".weight", (o, i)), (n + ".bias", (o,))])
    ln = lambda n: s.extend([(n + ".weight", (C,)), (n + ".bias", (C,))])

    def attn(n, kv):
        lin(n + ".attention.query", C, C)
        lin(n + ".attention.key", C, kv)
        lin(n + ".attention.value", C, kv)
        lin(n + ".output.dense", C, C)
        ln(n + ".output.LayerNorm")
    ln("qformer.layernorm")
    for l in range(layers):
        p = f"qformer.encoder.layer.{l}"
        attn(p + ".attention", C)
        if l % FREQ == 0:
            attn(p + ".crossattention", E)
        lin(p + ".intermediate.dense", FFN, C)
        lin(p + ".output.dense", C, FFN)
        ln(p + ".output.LayerNorm")
        lin(p + ".intermediate_query.dense", FFN, C)
        lin(p + ".output_query.dense", C, FFN)
        ln(p + ".output_query.LayerNorm")
    lin("vision_projection", D, C)
    lin("text_projection", D, C)
    lin("itm_head", 2, C)
    lin("cls.predictions.transform.dense", C, C)
    ln("cls.predictions.transform.LayerNorm")
    s.append(("cls.predictions.bias", (V,)))
    s.append(("temp", ()))
    return s


def make_params(layers):
    """The parameters as leaf tensors; the scale rule of bench_stage1_step.cpp's fill_model."""
    params = {}
    for ordinal, (name, shape) in enumerate(param_specs(layers)):
        norm = "LayerNorm." in name or "layernorm." in name
        scale, shift = 0.02, 0.0
        if name == "query_tokens":
            scale = 1.0
        elif name == "temp":
            scale, shift = 0.0, 0.07
        elif norm and name.endswith(".weight"):
            scale, shift = 0.1, 1.0
        elif name.endswith(".weight"):
            scale = 0.05
        v = values(ordinal, max(1, math.prod(shape)), scale, shift).reshape(shape)
        params[name] = torch.from_numpy(v).requires_grad_(True)
    return params


def decays(name):
    """blip2cpp's no_decay_rule::blip2 (optim/adamw.hpp)."""
    layer_norm = "LayerNorm" in name or "layernorm" in name
    bias = name.endswith(".bias") or name == "cls.predictions.bias"
    return not (layer_norm or bias or name in ("query_tokens", "temp"))


def make_batch(B, T):
    images = torch.from_numpy(values(IMAGE_ORDINAL, B * N * E).reshape(B, N, E))
    r = bits24(TEXT_ORDINAL, 0, B * T).astype(np.int64).reshape(B, T)
    ids = torch.zeros(B, T, dtype=torch.int64)
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):
        n = max(2, T - (5 * b) % max(1, T - 8))
        ids[b, 0] = CLS_ID
        ids[b, 1:n] = torch.from_numpy(1000 + r[b, 1:n] % 29000)
        mask[b, :n] = 1
    return images, ids, mask


class Stage1:
    def __init__(self, P, layers, dropout, kv_once):
        self.P, self.L, self.p, self.kv_once = P, layers, dropout, kv_once

    def lin(self, x, n):
        return F.linear(x, self.P[n + ".weight"], self.P[n + ".bias"])

    def ln(self, x, n):
        return F.layer_norm(x, (C,), self.P[n + ".weight"], self.P[n + ".bias"], EPS)

    def drop(self, x):
        return F.dropout(x, self.p, True) if self.p > 0 else x

    def attention(self, q, k, v, mask):
        """softmax(q k^T / sqrt(HS) + mask) v over NH heads; q (B, Lq, C), k and v (B, S, C)."""
        B, Lq, S = q.shape[0], q.shape[1], k.shape[1]
        qh = q.view(B, Lq, NH, HS).transpose(1, 2)
        kh = k.view(B, S, NH, HS).transpose(1, 2)
        vh = v.view(B, S, NH, HS).transpose(1, 2)
        scores = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(HS)
        if mask is not None:
            scores = scores + mask
        probs = self.drop(torch.softmax(scores, dim=-1))
        return torch.matmul(probs, vh).transpose(1, 2).reshape(B, Lq, C)

    def ffn(self, x, which):
        h = F.gelu(self.lin(x, which[0]))
        return self.ln(self.drop(self.lin(h, which[1] + ".dense")) + x, which[1] + ".LayerNorm")

    def embed(self, ids=None, queries=0):
        parts = []
        if queries:
            parts.append(self.P["query_tokens"].expand(queries, -1, -1))
        if ids is not None:
            pos = torch.arange(ids.shape[1])
            parts.append(F.embedding(ids, self.P["embeddings.word_embeddings.weight"], padding_idx=PAD_ID)
                         + F.embedding(pos, self.P["embeddings.position_embeddings.weight"])[None])
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.drop(self.ln(x, "qformer.layernorm"))

    def cross_kv(self, l, image, kv, index):
        """the cross-attention keys/values of layer l: projected from image (LAVIS), or kv[l] indexed by pair"""
        if kv is None:
            c = f"qformer.encoder.layer.{l}.crossattention.attention"
            return self.lin(image, c + ".key"), self.lin(image, c + ".value")
        k, v = kv[l]
        return (k, v) if index is None else (k.index_select(0, index), v.index_select(0, index))

    def bert(self, x, q_len, mask, image=None, kv=None, index=None, pasts=None, cache=False):
        """LAVIS's BertEncoder over x (B, q_len + text, C); returns (output, per-layer query self K/V if cache)"""
        new_pasts = []
        for l in range(self.L):
            pre = f"qformer.encoder.layer.{l}"
            a = pre + ".attention"
            k, v = self.lin(x, a + ".attention.key"), self.lin(x, a + ".attention.value")
            if cache:
                new_pasts.append((k, v))
            if pasts is not None:
                k, v = torch.cat([pasts[l][0], k], dim=1), torch.cat([pasts[l][1], v], dim=1)
            ctx = self.attention(self.lin(x, a + ".attention.query"), k, v, mask)
            h = self.ln(self.drop(self.lin(ctx, a + ".output.dense")) + x, a + ".output.LayerNorm")
            parts = []
            if q_len > 0:
                hq = h[:, :q_len]
                if l % FREQ == 0:
                    c = pre + ".crossattention"
                    ck, cv = self.cross_kv(l, image, kv, index)
                    cctx = self.attention(self.lin(hq, c + ".attention.query"), ck, cv, None)
                    hq = self.ln(self.drop(self.lin(cctx, c + ".output.dense")) + hq, c + ".output.LayerNorm")
                parts.append(self.ffn(hq, (pre + ".intermediate_query.dense", pre + ".output_query")))
            if h.shape[1] > q_len:
                parts.append(self.ffn(h[:, q_len:], (pre + ".intermediate.dense", pre + ".output")))
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return x, new_pasts

    def step(self, images, ids, mask, neg_image, neg_text):
        """the three losses (LAVIS Blip2Qformer.forward); negatives given, or sampled when neg_image is None"""
        B, T = ids.shape
        ext = lambda m: (1.0 - m[:, None, None, :].float()) * -10000.0
        kv = None
        if self.kv_once:
            kv = {l: self.cross_kv(l, images, None, None) for l in range(0, self.L, FREQ)}
        # image pass (queries + cross-attention), caching the queries' self-attention K/V for ITG
        query_out, pasts = self.bert(self.embed(queries=B), Q, None, image=images, kv=kv, cache=True)
        image_feats = F.normalize(self.lin(query_out, "vision_projection"), dim=-1)         # (B, Q, D)
        # text pass
        text_out, _ = self.bert(self.embed(ids), 0, ext(mask))
        text_feat = F.normalize(self.lin(text_out[:, 0], "text_projection"), dim=-1)         # (B, D)
        # ITC
        temp = self.P["temp"]
        sim_q2t = torch.matmul(image_feats.unsqueeze(1), text_feat.unsqueeze(-1)).squeeze(-1)  # (B, B, Q)
        sim_i2t = sim_q2t.max(-1)[0] / temp
        sim_t2q = torch.matmul(text_feat.unsqueeze(1).unsqueeze(1), image_feats.permute(0, 2, 1)).squeeze(-2)
        sim_t2i = sim_t2q.max(-1)[0] / temp                                                  # (B, B)
        targets = torch.arange(B)
        loss_itc = (F.cross_entropy(sim_i2t, targets, label_smoothing=0.1)
                    + F.cross_entropy(sim_t2i, targets, label_smoothing=0.1)) / 2
        # ITM: negatives (given, or LAVIS's draw), 3B pairs [pos ; neg image ; neg text]
        if neg_image is None:
            with torch.no_grad():
                eye = torch.eye(B, dtype=torch.bool)
                w_t2i = F.softmax(sim_t2i.masked_fill(eye, -10000.0), dim=1)
                w_i2t = F.softmax(sim_i2t.masked_fill(eye, -10000.0), dim=1)
                neg_image = torch.multinomial(w_t2i, 1)[:, 0]
                neg_text = torch.multinomial(w_i2t, 1)[:, 0]
        ids_all = torch.cat([ids, ids, ids[neg_text]], dim=0)
        mask_all = torch.cat([mask, mask, mask[neg_text]], dim=0)
        pair_image = torch.cat([targets, neg_image, targets])
        joint_mask = ext(torch.cat([torch.ones(3 * B, Q, dtype=mask.dtype), mask_all], dim=1))
        if kv is None:
            itm_out, _ = self.bert(self.embed(ids_all, 3 * B), Q, joint_mask, image=images[pair_image])
        else:
            itm_out, _ = self.bert(self.embed(ids_all, 3 * B), Q, joint_mask, kv=kv, index=pair_image)
        logits = self.lin(itm_out[:, :Q], "itm_head").mean(dim=1)                             # (3B, 2)
        itm_labels = torch.cat([torch.ones(B, dtype=torch.int64), torch.zeros(2 * B, dtype=torch.int64)])
        loss_itm = F.cross_entropy(logits, itm_labels)
        # ITG: [DEC] ids over the cached query K/V, multimodal-causal mask
        dec = ids.clone()
        dec[:, 0] = DEC_ID
        labels = dec.masked_fill(dec == PAD_ID, -100)
        causal = torch.tril(torch.ones(T, T, dtype=torch.float32))
        m01 = torch.cat([torch.ones(B, T, Q), causal[None].expand(B, T, T)], dim=2)
        m01 = m01 * torch.cat([torch.ones(B, Q), mask.float()], dim=1)[:, None, :]
        itg_out, _ = self.bert(self.embed(dec), 0, ((1.0 - m01) * -10000.0)[:, None], pasts=pasts)
        h = self.ln(F.gelu(self.lin(itg_out, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
        scores = F.linear(h, self.P["embeddings.word_embeddings.weight"], self.P["cls.predictions.bias"])  # (B, T, V)
        loss_itg = F.cross_entropy(scores[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), label_smoothing=0.1)
        return loss_itc, loss_itm, loss_itg


def rss_now_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--neg-image", default="")
    ap.add_argument("--neg-text", default="")
    ap.add_argument("--sample-negatives", action="store_true")
    ap.add_argument("--kv-once", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rss_base = rss_now_mib()

    P = make_params(args.layers)
    images, ids, mask = make_batch(args.batch, args.text)
    neg_image = neg_text = None
    if not args.sample_negatives:
        neg_image = torch.tensor([int(x) for x in args.neg_image.split(",")])
        neg_text = torch.tensor([int(x) for x in args.neg_text.split(",")])
    model = Stage1(P, args.layers, args.dropout, args.kv_once)
    groups = [dict(params=[p for n, p in P.items() if decays(n)], weight_decay=0.05),
              dict(params=[p for n, p in P.items() if not decays(n)], weight_decay=0.0)]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.98), eps=1e-8)

    def one_step(want_norm=False):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        losses = model.step(images, ids, mask, neg_image, neg_text)
        sum(losses).backward()
        t1 = time.perf_counter()
        norm = None
        if want_norm:
            norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in P.values() if p.grad is not None))
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        return [float(x) for x in losses], norm, t1 - t0, t3 - t2

    print(f"warm-up step ({args.layers} layers, B {args.batch}, T {args.text}, {torch.get_num_threads()} threads, "
          f"K/V {'once per image' if args.kv_once else 'per pair (LAVIS)'}) ...", flush=True)
    tw = time.perf_counter()
    first, norm, _, _ = one_step(True)
    print(f"warm-up step {time.perf_counter() - tw:.1f} s: losses {first[0]:.6f} {first[1]:.6f} {first[2]:.6f}; "
          f"|grad| {norm:.6e}", flush=True)
    total, fb, op = [], [], []
    last = first
    for r in range(args.reps):
        t0 = time.perf_counter()
        last, _, a, b = one_step()
        total.append(time.perf_counter() - t0)
        fb.append(a)
        op.append(b)
        print(f"step {r + 1}: {total[-1]:.2f} s (forward + backward {a:.2f}, AdamW {b:.3f}); losses "
              f"{last[0]:.6f} {last[1]:.6f} {last[2]:.6f}; load average {load_average()}",
              flush=True)
    res = dict(peer="pytorch", torch=torch.__version__, threads=torch.get_num_threads(),
               blas=" ".join(loaded_blas()), kv_once=args.kv_once, **ms_summary(total),
               fwd_bwd_ms=statistics.median(fb) * 1e3, optim_ms=statistics.median(op) * 1e3,
               losses_first=first, losses_last=last, grad_norm_first=norm,
               rss_base_mib=rss_base, rss_peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
