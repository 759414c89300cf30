"""Blocks shared by several models: a pre-LayerNorm Transformer encoder with padding-aware attention, and the
timestep-embedding MLP of the diffusion denoisers."""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_diffusion.diffusion import timestep_embedding
from recbole_diffusion.utils import check_divisible, check_positive_int, check_probability

ATTENTION_MASKS = ("key_padding", "official")


def padding_attention_mask(item_seq, mode="key_padding", query_index=None, causal=False):
    """Additive attention mask [B, 1, Lq, L] (0 = attend, large negative = masked) for right-padded ``item_seq``.

    ``key_padding``: every query attends to the real items only (padding keys masked); with ``causal`` also
    to earlier positions only (SASRec-style; [B, 1, L, L], ``query_index`` not supported).
    ``official``: DiffuRec's official masking: padding *query rows* are flattened to uniform attention and every
    key, padding included, is visible. ``query_index`` [B] keeps only those query rows (Lq = 1).
    """
    real = item_seq > 0
    B, L = item_seq.shape
    if mode == "key_padding":
        visible = real[:, None, None, :]
        if causal:
            visible = visible & torch.ones(L, L, dtype=torch.bool, device=item_seq.device).tril()[None, None]
        mask = torch.zeros(visible.shape, device=item_seq.device)
        return mask.masked_fill(~visible, torch.finfo(mask.dtype).min)
    query_real = real if query_index is None else real.gather(1, query_index.view(-1, 1))
    # -1e9 added to every score of a row swamps the scores in float32 and gives the uniform attention of the
    # official masked_fill(-1e9).
    return ((~query_real).float() * -1e9)[:, None, :, None].expand(B, 1, query_real.shape[1], L)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on CPU, where torch draws one Mersenne-Twister number per element and the
    mask costs several times the matmul it follows (hidden 128: 4x a block's FFN matmul, 30% of a DiffuRec epoch).

    On CPU in training, one 64-bit draw gives the 16-bit uniforms of four elements: an element is dropped when its
    draw is below round(p * 65536), so the rate is p to within 1/131072, and kept elements are scaled by the exact
    inverse of the kept share (unbiased, as ``nn.Dropout``). The draws come from torch's default generator, so a
    seed fixes the masks. Elsewhere (GPU, eval, p = 0, in-place) it is ``nn.Dropout``.
    """

    def forward(self, x):
        if not self.training or x.device.type != "cpu" or self.inplace or not 0 < self.p < 1:
            return super().forward(x)
        return cpu_dropout(x, self.p)


def cpu_dropout(x, p):
    """Dropout of ``x`` at rate ``p`` (0 < p < 1) with four 16-bit uniforms per 64-bit draw (see :class:`Dropout`)."""
    drop = round(p * 65536)
    if drop in (0, 65536):  # p within 1/131072 of 0 or 1: torch's own mask, so the rate is still p
        return F.dropout(x, p, training=True)
    n = x.numel()
    draws = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    uniform16 = draws.view(torch.int16)[:n].view(x.shape)  # each uniform on -32768..32767
    mask = (uniform16 >= drop - 32768).to(x.dtype).mul_(65536 / (65536 - drop))
    return x * mask


class MultiHeadAttention(nn.Module):
    def __init__(self, hidden_size, n_heads, attn_dropout_prob):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout_prob = attn_dropout_prob
        nn.init.xavier_normal_(self.out.weight)

    def forward(self, query, key_value, attn_mask):
        """query [B, Lq, H], key_value [B, L, H], additive attn_mask [B, 1, Lq, L] -> [B, Lq, H]."""
        B, Lq, H = query.shape
        if query is key_value:
            q, k, v = self.qkv(query).chunk(3, dim=-1)
        else:
            w_q, w_kv = self.qkv.weight.split([H, 2 * H])
            b_q, b_kv = self.qkv.bias.split([H, 2 * H])
            q = F.linear(query, w_q, b_q)
            k, v = F.linear(key_value, w_kv, b_kv).chunk(2, dim=-1)
        heads = lambda x: x.view(B, x.shape[1], self.n_heads, -1).transpose(1, 2)  # noqa: E731
        dropout = self.attn_dropout_prob if self.training else 0.0
        hidden = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=attn_mask, dropout_p=dropout)
        return self.out(hidden.transpose(1, 2).reshape(B, Lq, H))


class FeedForward(nn.Module):
    def __init__(self, hidden_size, inner_size, dropout_prob):
        super().__init__()
        self.w_1 = nn.Linear(hidden_size, inner_size)
        self.w_2 = nn.Linear(inner_size, hidden_size)
        self.dropout = Dropout(dropout_prob)
        nn.init.xavier_normal_(self.w_1.weight)
        nn.init.xavier_normal_(self.w_2.weight)

    def forward(self, x):
        return self.w_2(self.dropout(F.gelu(self.w_1(x), approximate="tanh")))


class PreLNTransformerBlock(nn.Module):
    """x + Dropout(Attention(LN(x))), then x + Dropout(FFN(LN(x))), then Dropout (DiffuRec's block)."""

    def __init__(self, hidden_size, n_heads, inner_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attention = MultiHeadAttention(hidden_size, n_heads, attn_dropout_prob)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout_prob)
        self.dropout = Dropout(hidden_dropout_prob)

    def forward(self, x, attn_mask, query_index=None):
        """x [B, L, H]; with ``query_index`` [B] only that position is computed and [B, 1, H] returned."""
        normed = self.attn_norm(x)
        if query_index is None:
            x = x + self.dropout(self.attention(normed, normed, attn_mask))
        else:
            gather = query_index.view(-1, 1, 1).expand(-1, 1, x.shape[-1])
            x = x.gather(1, gather) + self.dropout(self.attention(normed.gather(1, gather), normed, attn_mask))
        x = x + self.dropout(self.feed_forward(self.ffn_norm(x)))
        return self.dropout(x)


class TransformerEncoder(nn.Module):
    """A stack of :class:`PreLNTransformerBlock`.

    ``forward(x, item_seq, output_index)`` returns the hidden state at ``output_index`` [B] only, [B, H]: the last
    block computes that one query row, which is all a next-item model reads. With ``output_index=None`` every
    position is returned, [B, L, H]. ``causal`` restricts each position to itself and earlier ones.
    """

    def __init__(self, n_layers, n_heads, hidden_size, inner_size, hidden_dropout_prob, attn_dropout_prob,
                 layer_norm_eps=1e-12, attention_mask="key_padding", causal=False):
        super().__init__()
        if causal and attention_mask != "key_padding":
            raise ValueError("causal attention is only available with attention_mask='key_padding'.")
        self.attention_mask = attention_mask
        self.causal = causal
        self.blocks = nn.ModuleList(
            PreLNTransformerBlock(hidden_size, n_heads, inner_size, hidden_dropout_prob, attn_dropout_prob,
                                  layer_norm_eps)
            for _ in range(n_layers)
        )

    def forward(self, x, item_seq, output_index=None):
        mask = padding_attention_mask(item_seq, self.attention_mask, causal=self.causal)
        if output_index is None:
            for block in self.blocks:
                x = block(x, mask)
            return x
        for block in self.blocks[:-1]:
            x = block(x, mask)
        if self.causal:
            # the query row of output_index under the causal mask: that row of the [L, L] mask
            last_mask = mask.expand(x.shape[0], -1, -1, -1).gather(
                2, output_index.view(-1, 1, 1, 1).expand(-1, 1, 1, mask.shape[-1]))
        elif self.attention_mask == "key_padding":
            last_mask = mask
        else:
            last_mask = padding_attention_mask(item_seq, self.attention_mask, output_index)
        return self.blocks[-1](x, last_mask, query_index=output_index).squeeze(1)


class TimestepMLP(nn.Module):
    """Sinusoidal timestep embedding followed by Linear -> SiLU -> Linear (DDPM / DiffuRec)."""

    def __init__(self, hidden_size, inner_size=None, activation=nn.SiLU):
        super().__init__()
        inner_size = inner_size or 4 * hidden_size
        self.hidden_size = hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden_size, inner_size), activation(), nn.Linear(inner_size, hidden_size))

    def forward(self, timesteps):
        """timesteps [B] (already scaled) -> [B, H]."""
        return self.mlp(timestep_embedding(timesteps, self.hidden_size))


class PositionalSequenceEncoder(nn.Module):
    """SASRec-style encoder of a sequence of embeddings: learned position embeddings are added, then input
    dropout, a :class:`TransformerEncoder` (pre-LN blocks) and a final LayerNorm. DreamRec's guidance encoder
    and SeqDiffRec's approximator share it.

    ``forward(seq_emb, item_seq, output_index=None)``: ``seq_emb`` [B, L, H] are the inputs before positions
    (item embeddings plus whatever a model adds at every position); ``item_seq`` [B, L] is > 0 at the positions
    that may be attended to (for the padding mask); ``output_index`` [B] selects one position -> [B, H], None
    returns every position -> [B, L, H]. ``max_seq_length`` bounds L.
    """

    def __init__(self, max_seq_length, n_layers, n_heads, hidden_size, inner_size, hidden_dropout_prob,
                 attn_dropout_prob, layer_norm_eps=1e-12, causal=False):
        super().__init__()
        self.position_embedding = nn.Embedding(max_seq_length, hidden_size)
        self.input_dropout = Dropout(hidden_dropout_prob)
        self.encoder = TransformerEncoder(n_layers, n_heads, hidden_size, inner_size, hidden_dropout_prob,
                                          attn_dropout_prob, layer_norm_eps, causal=causal)
        self.output_layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    @classmethod
    def from_config(cls, config, max_seq_length, causal=False):
        """Built from RecBole's Transformer keys: n_layers, n_heads, hidden_size, inner_size,
        hidden_dropout_prob, attn_dropout_prob, layer_norm_eps."""
        return cls(max_seq_length, **transformer_kwargs(config), causal=causal)

    def forward(self, seq_emb, item_seq, output_index=None):
        positions = torch.arange(seq_emb.shape[1], device=seq_emb.device)
        x = self.input_dropout(seq_emb + self.position_embedding(positions)[None])
        # the blocks are pre-LN, so their residual stream leaves un-normalized: normalize it once at the end
        return self.output_layer_norm(self.encoder(x, item_seq, output_index))


def check_transformer_config(config, model):
    """One clear error for a bad RecBole Transformer key (``model`` names the model in the message)."""
    check_positive_int(config, model, "inner_size", "n_layers", "n_heads")
    check_divisible(config, model, "hidden_size", "n_heads")
    check_probability(config, model, "hidden_dropout_prob", "attn_dropout_prob", inclusive_one=False)


def left_pad(item_seq, item_seq_len):
    """Right-padded ``item_seq`` [B, L] (RecBole's layout) -> the same sequences left-padded, the last real item
    at position L-1 (the layout of DiffuRec's and DiQDiff's official code): [B, L]."""
    L = item_seq.shape[1]
    # row b is rotated right by L - len_b; its padding (positions len_b..L-1) wraps round to the front
    index = (torch.arange(L, device=item_seq.device)[None] + item_seq_len[:, None]) % L
    return item_seq.gather(1, index)


class DiffuRecApproximator(nn.Module):
    """DiffuRec's approximator, for the models built on it (DiQDiff). The history's item embeddings become
    LN(Dropout(E[seq])) (:meth:`history`); x_t plus the step embedding d_t is weighted into every history
    position, z_i = h_i + lambda_i (x_t + d_t); a :class:`TransformerEncoder` reads z and the output position
    goes through Dropout and LayerNorm.

    ``forward(history, item_seq, output_index, x_t, timesteps, weight)``: history [B, L, H], item_seq [B, L]
    (> 0 where attendable), output_index [B], x_t [B, H], timesteps [B] (already scaled), weight lambda a
    number or a tensor broadcasting to [B, L, H] -> x0_pred [B, H].
    """

    def __init__(self, n_layers, n_heads, hidden_size, inner_size, hidden_dropout_prob, attn_dropout_prob,
                 emb_dropout, layer_norm_eps=1e-12, attention_mask="key_padding"):
        super().__init__()
        self.history_norm = nn.Sequential(Dropout(emb_dropout), nn.LayerNorm(hidden_size, eps=layer_norm_eps))
        self.step_embedding = TimestepMLP(hidden_size)
        self.transformer = TransformerEncoder(n_layers, n_heads, hidden_size, inner_size, hidden_dropout_prob,
                                              attn_dropout_prob, layer_norm_eps, attention_mask)
        self.output_norm = nn.Sequential(Dropout(hidden_dropout_prob), nn.LayerNorm(hidden_size, eps=layer_norm_eps))

    def history(self, seq_emb):
        """LN(Dropout(seq_emb)): [B, L, H] -> [B, L, H]."""
        return self.history_norm(seq_emb)

    def forward(self, history, item_seq, output_index, x_t, timesteps, weight):
        x = x_t + self.step_embedding(timesteps)
        z = history + weight * x.unsqueeze(1)  # z_i = h_i + lambda_i (x_t + d_t)
        return self.output_norm(self.transformer(z, item_seq, output_index))


TRANSFORMER_KEYS = ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob", "attn_dropout_prob",
                    "layer_norm_eps")


def transformer_kwargs(config):
    """RecBole's Transformer keys, which are :class:`TransformerEncoder`'s argument names:
    ``TransformerEncoder(**transformer_kwargs(config))``."""
    return {key: config[key] for key in TRANSFORMER_KEYS}
