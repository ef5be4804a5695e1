"""SaG learning runs for the diagnosis table of 11_sag: train with text only (no mask is read), log L_C³, the C³ accuracy,
‖t‖, max A^fuse and the gradient norm of every parameter group, then score val mIoU (weighted and max) and the
shatter/gather figures. Runs are compared at equal samples; the 512³ matmul probe is printed with every result.

Run: OMP_NUM_THREADS=1 python bench/bench_sag_learning.py --data DIR/shaperefs --samples 38400 \
        --set model.sag.recon_weight=10 --log results.jsonl
(DIR from `ris_nb synth --out DIR/shaperefs --n-images 3000 --seed 0`; --preset sag_tiny by default)."""
import argparse
import json
import math
import time
import torch
import numpy as np
from ris_nb.core import get_preset
from ris_nb.train import prepare
from ris_nb.evaluate import evaluate, shatter_gather
from ris_nb.testing import probe_ms
torch.set_num_threads(1)
ap = argparse.ArgumentParser()
ap.add_argument('--data', required=True, help='the dataset folder (holding refs(*).p)'); ap.add_argument('--preset', default='sag_tiny')
ap.add_argument('--samples', type=int, default=9600); ap.add_argument('--set', nargs='*', default=[])
ap.add_argument('--log', default=None); ap.add_argument('--tag', default='')
a = ap.parse_args()
def val(x):
    try: return json.loads(x)
    except Exception: return x
ov = {k: val(v) for k, v in (s.split('=', 1) for s in a.set)}
import os
cfg = get_preset(a.preset).override({'data.root': os.path.dirname(a.data), 'data.dataset': os.path.basename(a.data), **ov})
steps = a.samples // cfg.train.batch_size
cfg = cfg.override({'train.max_steps': steps, 'train.epochs': 0})
p = prepare(cfg, ['train', 'val'])
cfg, model = p.cfg, p.model
groups = model.param_groups(cfg)
opt = torch.optim.AdamW(groups)
for g in opt.param_groups: g['base_lr'] = g['lr']
W = cfg.train.warmup_steps
probe0 = probe_ms(reps=20)
t0 = time.time(); step = 0; model.train(); hist = []
names = [g['name'] for g in groups]
while step < steps:
    for batch in p.loaders['train']:
        if step >= steps: break
        f = min(1.0, (step + 1) / max(W, 1)) * (0.5 * (1 + math.cos(math.pi * step / steps)) if cfg.train.schedule == 'cosine' else 1.0)
        for g in opt.param_groups: g['lr'] = g['base_lr'] * f
        out = model(batch); L = model.losses(out, batch)
        opt.zero_grad(); L['loss'].backward()
        gn = {g['name']: float(torch.norm(torch.stack([q.grad.norm() for q in g['params'] if q.grad is not None])) if any(q.grad is not None for q in g['params']) else 0.0) for g in opt.param_groups}
        if cfg.train.grad_clip > 0: torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step(); step += 1
        rec = {k: float(v) for k, v in L.items()}
        with torch.no_grad():
            from ris_nb.models.sag import c3_logits
            s = cfg.model.sag
            lg = c3_logits(out.fused, out.text, s.c3_temperature, True, s.c3_normalize_target)
            rec['acc'] = float((lg.argmax(1) == torch.arange(len(lg))).float().mean())
            rec['tnorm'] = float(out.text.norm(dim=-1).mean())
            rec['afuse_max'] = float(out.a_fuse.max(1).values.mean())
        rec.update({f'g_{k}': v for k, v in gn.items()}); hist.append(rec)
        if step % 25 == 0 or step == steps:
            m = {k: np.mean([h[k] for h in hist[-25:]]) for k in hist[-1]}
            print(f"step {step} " + ' '.join(f"{k} {v:.3g}" for k, v in m.items()) + f" t {time.time()-t0:.0f}s", flush=True)
train_s = time.time() - t0
vl = p.loaders['val']
r = evaluate(model, vl, protocol=cfg.eval.protocol, progress=False, keep_samples=True)
sg = shatter_gather(model, vl)
res = {'tag': a.tag, 'set': ov, 'samples': steps * cfg.train.batch_size, 'steps': steps, 'train_s': round(train_s),
       'mIoU': r['overall']['mIoU'], 'oIoU': r['overall']['oIoU'], **{k: v for k, v in sg.items()},
       'by_type': {k: round(v['mIoU'], 1) for k, v in r['by_type'].items()},
       'c3_last': float(np.mean([h.get('loss_c3', h.get('loss_itc', 0)) for h in hist[-50:]])), 'acc_last': float(np.mean([h['acc'] for h in hist[-50:]])),
       'probe_ms': round(probe0, 2), 'probe_end_ms': round(probe_ms(reps=20), 2)}
for sc in ('max',):
    cfg2 = model.cfg.model.sag; old = cfg2.inference; cfg2.inference = sc
    res[f'mIoU_{sc}'] = evaluate(model, vl, protocol=cfg.eval.protocol, progress=False, keep_samples=False)['overall']['mIoU']; cfg2.inference = old
print('RESULT', json.dumps(res), flush=True)
if a.log:
    with open(a.log, 'a') as fh: fh.write(json.dumps(res) + '\n')
