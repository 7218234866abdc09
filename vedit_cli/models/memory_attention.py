"""SVDiff's spatial-aware temporal memory and recurrent memory attention (Chen et al., arXiv 2405.19726,
sec. 4.2, eq. 6-8).

One `MemoryAttention` follows every transformer block (diffusers `Transformer2DModel`) of the UNet. It runs a
self-attention over the concatenation [F^n; M^n] of the block's output features and an h x w memory, and returns
the updated features and the next memory M^{n+1} (eq. 7). `UNetMemory` owns those modules, hooks them onto the
UNet, and keeps the recurrent state: one memory per (denoising step, transformer block), each with a batch row per
guidance branch (eq. 8: unconditional and conditional memories are separate). The output projection starts at
zero, so an untrained memory leaves the UNet's output unchanged.

Inference carries the state detached (no autograd graph from frame to frame). Training (`keep_graph=True`, vedit_cli.
train.recipes.svdiff_memory) keeps the graph so a frame's loss reaches the memory writes of the frames before it, and
truncates it with `detach_state()` at every clip boundary (sec. 4.3: the memory is carried from clip to clip, the
gradient is not). The hooks write the state once per forward of a transformer block: diffusers' gradient
checkpointing re-runs resnets and the transformer's inner blocks in backward, never the Transformer2DModel module
itself, so no hook runs twice (tests/test_train_svdiff_memory.py counts the calls).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from vedit_cli.errors import WeightsIntegrityError

METADATA_KEY = "svdiff_memory_config"
WEIGHTS_FILE = "memory_attention.safetensors"


@dataclass(frozen=True)
class MemoryConfig:
    """Architecture of the memory modules; travels in the safetensors metadata of the trained weights."""

    block_names: tuple[str, ...]  # the UNet's Transformer2DModel names, in forward order
    channels: tuple[int, ...]  # d of each memory = that block's channels
    heads: tuple[int, ...]
    head_dims: tuple[int, ...]
    height: int = 8  # h = w = 8 in the paper (sec. 5.1)
    width: int = 8
    position_hidden: int = 32  # hidden width of eq. 6's two-layer FFN (not given in the paper)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "MemoryConfig":
        fields = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    @classmethod
    def for_unet(cls, unet: nn.Module, height: int = 8, width: int = 8, position_hidden: int = 32) -> "MemoryConfig":
        """One memory per transformer block of `unet`, sized to that block (d = its channels)."""
        blocks = transformer_blocks(unet)
        return cls(
            block_names=tuple(blocks), channels=tuple(b.config.in_channels for b in blocks.values()),
            heads=tuple(b.config.num_attention_heads for b in blocks.values()),
            head_dims=tuple(b.config.attention_head_dim for b in blocks.values()),
            height=height, width=width, position_hidden=position_hidden,
        )


def transformer_blocks(unet: nn.Module) -> dict[str, nn.Module]:
    """The UNet's Transformer2DModel blocks by name, in registration (= forward) order."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    return {name: module for name, module in unet.named_modules() if isinstance(module, Transformer2DModel)}


def relative_grid(height: int, width: int) -> torch.Tensor:
    """Positions (i - h/2, j - w/2) of the memory cells relative to the map's centre, [h*w, 2] (eq. 6)."""
    rows = torch.arange(height, dtype=torch.float32) - height / 2
    cols = torch.arange(width, dtype=torch.float32) - width / 2
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


class MemoryAttention(nn.Module):
    """Self-attention over [F; M] along the spatial dimension (eq. 7), with the memory's initial value (eq. 6)."""

    def __init__(self, channels: int, heads: int, head_dim: int, height: int = 8, width: int = 8,
                 position_hidden: int = 32):
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.initial_embedding = nn.Parameter(torch.randn(channels) * 0.02)  # w^0 of eq. 6
        self.position_ffn = nn.Sequential(nn.Linear(2, position_hidden), nn.GELU(), nn.Linear(position_hidden, channels))
        self.norm = nn.LayerNorm(channels)
        self.attention = Attention(query_dim=channels, heads=heads, dim_head=head_dim, out_bias=True)
        nn.init.zeros_(self.attention.to_out[0].weight)  # untrained module = identity
        nn.init.zeros_(self.attention.to_out[0].bias)
        self.register_buffer("grid", relative_grid(height, width), persistent=False)

    def initial_memory(self, batch: int) -> torch.Tensor:
        """M^0 = [w^0 + FFN(i - h/2, j - w/2)], [batch, h*w, d] (eq. 6)."""
        grid = self.grid.to(dtype=self.initial_embedding.dtype)
        memory = self.initial_embedding + self.position_ffn(grid)
        return memory.unsqueeze(0).expand(batch, -1, -1)

    def forward(self, features_bchw: torch.Tensor, memory_bnd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[F^n; M^{n+1}] = [F^n; M^n] + Attn(norm([F^n; M^n])): updated features and the next memory (eq. 7)."""
        batch, channels, height, width = features_bchw.shape
        tokens = features_bchw.flatten(2).transpose(1, 2)
        joint = torch.cat([tokens, memory_bnd.to(tokens.dtype)], dim=1)
        joint = joint + self.attention(self.norm(joint))
        features, memory = joint[:, : height * width], joint[:, height * width :]
        return features.transpose(1, 2).reshape(batch, channels, height, width).contiguous(), memory


class UNetMemory(nn.Module):
    """The memory modules of one UNet plus their recurrent state, keyed by (denoising step, block index)."""

    def __init__(self, config: MemoryConfig, keep_graph: bool = False):
        super().__init__()
        self.config = config
        self.keep_graph = keep_graph  # True (training): the carried state keeps its autograd graph
        self.blocks = nn.ModuleList(
            MemoryAttention(c, h, hd, config.height, config.width, config.position_hidden)
            for c, h, hd in zip(config.channels, config.heads, config.head_dims)
        )
        self.state: dict[tuple[int, int], torch.Tensor] = {}
        self.step = 0
        self.bypass = False  # True: the UNet runs as if no memory were attached (state neither read nor written)
        self._hooks: list = []

    def attach(self, unet: nn.Module) -> "UNetMemory":
        """Hook a memory attention onto the output of every transformer block of `unet` (sec. 4.1, fig. 2a)."""
        blocks = transformer_blocks(unet)
        if tuple(blocks) != self.config.block_names:
            raise WeightsIntegrityError(
                f"svdiff memory weights were made for a UNet with transformer blocks {self.config.block_names[:2]}..., "
                f"not this one ({tuple(blocks)[:2]}...); use memory weights trained for this UNet"
            )
        self.detach()
        for index, block in enumerate(blocks.values()):
            self._hooks.append(block.register_forward_hook(self._hook_for(index)))
        return self

    def detach(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _hook_for(self, index: int):
        def hook(module, args, output):
            if self.bypass:
                return output
            tupled = isinstance(output, tuple)
            features = output[0] if tupled else output.sample
            features, next_memory = self.blocks[index](features, self._read(index, features.shape[0]))
            self.state[(self.step, index)] = next_memory if self.keep_graph else next_memory.detach()
            if tupled:
                return (features, *output[1:])
            output.sample = features
            return output

        return hook

    def _read(self, index: int, batch: int) -> torch.Tensor:
        memory = self.state.get((self.step, index))
        if memory is None:
            return self.blocks[index].initial_memory(batch)
        if memory.shape[0] != batch:
            raise ValueError(f"memory holds {memory.shape[0]} guidance branches but the UNet got a batch of {batch}")
        return memory

    @contextmanager
    def at_step(self, step: int):
        """Route reads and writes to the memories of denoising step `step` (each step keeps its own, sec. 4.3)."""
        previous, self.step = self.step, step
        try:
            yield self
        finally:
            self.step = previous

    @contextmanager
    def bypassed(self):
        """Inside this block the memory is neither read nor written: the plain UNet (SVDiff's inversion pass)."""
        previous, self.bypass = self.bypass, True
        try:
            yield self
        finally:
            self.bypass = previous

    def clear(self) -> None:
        """Forget the stream: the next frame starts from M^0."""
        self.state = {}

    def detach_state(self) -> None:
        """Keep the carried memories' values, drop their autograd graph (truncated backpropagation through time:
        training calls it at every clip boundary). A no-op for inference, whose state is detached already."""
        self.state = {key: memory.detach() for key, memory in self.state.items()}

    def forward(self, run, *args, **kwargs):
        """`run(*args, **kwargs)`: a function that runs the UNet this memory is attached to (e.g. a whole segment's
        loss). The memory has no forward of its own (its hooks run inside the UNet's); training calls the function
        through this module so that a wrapper around it (DDP's gradient sync, accelerate's autocast) sees one
        forward per backward."""
        return run(*args, **kwargs)

    def memory_state(self) -> dict[str, torch.Tensor]:
        """The recurrent state as plain tensors (safetensors-friendly keys), to cut a stream and resume it later."""
        return {f"step{step}.block{index}": memory.clone() for (step, index), memory in self.state.items()}

    def load_memory_state(self, state: dict[str, torch.Tensor]) -> None:
        parameter = self.blocks[0].initial_embedding
        self.state = {}
        for key, memory in state.items():
            step, index = (int(part[len(prefix):]) for part, prefix in zip(key.split("."), ("step", "block")))
            self.state[(step, index)] = memory.to(device=parameter.device, dtype=parameter.dtype)


def save_memory_weights(memory: UNetMemory, path: Path) -> Path:
    """Write the memory modules' weights with their config in the safetensors metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in memory.blocks.state_dict().items()}
    save_file(tensors, str(path), metadata={METADATA_KEY: memory.config.to_json()})
    return Path(path)


def load_memory_weights(path: Path) -> UNetMemory:
    """Rebuild the memory modules from a safetensors file written by `save_memory_weights`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise WeightsIntegrityError(f"{path} has no '{METADATA_KEY}' metadata: it was not written by vedit")
    memory = UNetMemory(MemoryConfig.from_json(metadata[METADATA_KEY]))
    memory.blocks.load_state_dict(load_file(str(path)))
    return memory.eval().requires_grad_(False)
