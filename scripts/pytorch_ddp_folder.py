#!/usr/bin/env python3
"""Reference for `swiftai bench ddp --data DIR --arch resnet18`: PyTorch DDP (gloo) training a torchvision ResNet on an
image folder (DIR/train/<label>/*.jpg), timed like the bench: untimed warm-up batches, then timed batches, all ranks.

Reference tooling (torch, torchvision from the reference venv), never a SwiftAI dependency. Launch:
  torchrun --standalone --nproc-per-node N scripts/pytorch_ddp_folder.py DIR [--arch resnet18] [--size 128]
      [--presize 160] [--bs GLOBAL] [--threads T] [--workers W] [--warmup 3] [--batches 10]
Items: decode, Resize(presize), RandomResizedCrop(size, scale 0.75-1), flip, normalise (ImageNet), as the fastai
pipeline's presizing; the global batch is split over the ranks (DistributedSampler). Rank 0 prints one JSON line.
"""
import argparse, json, time
import torch, torch.distributed as dist, torch.nn.functional as F
import torchvision
from torchvision import transforms as T

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir"); ap.add_argument("--arch", default="resnet18"); ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--presize", type=int, default=160); ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1); ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3); ap.add_argument("--batches", type=int, default=10)
    a = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    tf = T.Compose([T.Resize(a.presize), T.RandomResizedCrop(a.size, scale=(0.75, 1.0)), T.RandomHorizontalFlip(),
                    T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(a.dir + "/train", transform=tf)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.bs // world, sampler=sampler, num_workers=a.workers,
                                     drop_last=True, persistent_workers=a.workers > 0)
    model = getattr(torchvision.models, a.arch)(num_classes=len(ds.classes)).to(memory_format=torch.channels_last)
    model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    done, t0, epoch = 0, None, 0
    while done < a.warmup + a.batches:
        sampler.set_epoch(epoch); epoch += 1
        for x, y in dl:
            if done == a.warmup:
                dist.barrier(); t0 = time.time()
            loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
            loss.backward(); opt.step(); opt.zero_grad()
            done += 1
            if done == a.warmup + a.batches:
                break
    dist.barrier(); secs = time.time() - t0
    if rank == 0:
        print(json.dumps({"framework": f"pytorch {torch.__version__} DDP gloo", "model": a.arch, "world_size": world,
                          "threads_per_rank": a.threads, "global_bs": a.bs // world * world, "size": a.size,
                          "images_per_s": round(a.batches * (a.bs // world) * world / secs, 1)}))
    dist.destroy_process_group()

if __name__ == "__main__":
    main()
