"""Parameter names of published RT-DETRv2 checkpoints -> ``ExtRTDETR`` names.

Two source layouts:

* ``rtdetrv2_pytorch`` (lyuwenyu/RT-DETR, ``rtdetrv2_pytorch``; ``PResNet`` +
  ``HybridEncoder`` + ``RTDETRTransformerv2``): torch ``nn.Linear`` weights are
  ``[out, in]``, ``nn.MultiheadAttention`` packs q/k/v into ``in_proj_weight [3C, C]``,
  BatchNorm statistics are ``running_mean``/``running_var`` (+ ``num_batches_tracked``).
* ``paddledet_develop`` (PaddleDetection develop ``DETR`` with ``ResNet`` +
  ``HybridEncoder`` + ``RTDETRTransformerv2``): the backbone is ppdet's ``ResNet`` as ours;
  ppdet's ``MultiHeadAttention`` packs q/k/v as ``in_proj_weight [C, 3C]``; un-named
  ``nn.Sequential`` children are ``0``/``1``; ``denoising_class_embed`` has ``num_classes``
  rows (ours and the torch one ``num_classes + 1``, the last the padding row).

:func:`translate` maps one source name to ``[(target_name, transform)]``, ``[]`` for a
tensor that is dropped on purpose (``[('', 'drop:<reason>')]``), or ``None``
for a name no rule knows. Transforms: ``copy``, ``transpose`` (torch Linear), ``q``/``k``/
``v`` (one third of a packed projection), ``bn`` (a renamed BatchNorm statistic),
``repvgg_fused`` (a fused RepVGG conv, see :mod:`.rtdetrv2_weights`), ``dn_pad``.
"""
import re

__all__ = ['LAYOUTS', 'translate', 'resnet_block_name']

LAYOUTS = ('rtdetrv2_pytorch', 'paddledet_develop')

_TORCH_BN = {'weight': 'weight', 'bias': 'bias', 'running_mean': '_mean',
             'running_var': '_variance'}
_PADDLE_BN = {'weight': 'weight', 'bias': 'bias', '_mean': '_mean', '_variance': '_variance'}
_LINEAR_PARTS = ('self_attn.out_proj', 'linear1', 'linear2', 'cross_attn.sampling_offsets',
                 'cross_attn.attention_weights', 'cross_attn.value_proj',
                 'cross_attn.output_proj')


def resnet_block_name(stage, index, count):
    """ppdet ``ResNet``'s name of block ``index`` of stage ``stage`` (2..5) with ``count``
    blocks: ``res4a, res4b1, ...`` for stage 4 with more than 10 blocks, else
    ``res{stage}{a,b,c,..}``."""
    if count > 10 and stage == 4:
        return 'res4a' if index == 0 else f'res4b{index}'
    return f'res{stage}{chr(ord("a") + index)}'


def _bn(prefix, stat, table, drop_tracked):
    if stat == 'num_batches_tracked' and drop_tracked:
        return [('', 'drop:BatchNorm batch counter (unused at inference; paddle has none)')]
    if stat not in table:
        return None
    return [(f'{prefix}.{table[stat]}', 'bn' if table[stat] != stat else 'copy')]


def _conv_norm(prefix, rest, conv, norm, bn_table, torch_layout, dst=('conv2d', 'bn')):
    """A conv + BatchNorm pair named ``conv``/``norm`` in the source -> ``dst`` names
    (ours: ``conv2d``/``bn``; ppdet's ResNet: ``conv``/``norm``)."""
    m = re.fullmatch(rf'{conv}\.weight', rest)
    if m:
        return [(f'{prefix}.{dst[0]}.weight', 'copy')]
    m = re.fullmatch(rf'{norm}\.(\w+)', rest)
    if m:
        return _bn(f'{prefix}.{dst[1]}', m.group(1), bn_table, torch_layout)
    return None


def _attention(prefix, rest, torch_layout):
    """Transformer-layer tensors (packed self-attention, Linear layers, norms)."""
    m = re.fullmatch(r'self_attn\.in_proj_(weight|bias)', rest)
    if m:
        kind = m.group(1)
        return [(f'{prefix}.self_attn.{p}_proj.{kind}', p) for p in 'qkv']
    if rest == 'cross_attn.num_points_scale':
        return [('', 'drop:derived buffer 1/num_points (checked against the config)')]
    for part in _LINEAR_PARTS:
        if rest == f'{part}.weight':
            return [(f'{prefix}.{part}.weight', 'transpose' if torch_layout else 'copy')]
        if rest == f'{part}.bias':
            return [(f'{prefix}.{part}.bias', 'copy')]
    if re.fullmatch(r'norm[123]\.(weight|bias)', rest):
        return [(f'{prefix}.{rest}', 'copy')]
    return None


def _backbone(rest, layout, stage_counts):
    if layout == 'paddledet_develop':
        return [(f'backbone.{rest}', 'copy')]
    m = re.fullmatch(r'conv1\.(conv1_\d)\.(.+)', rest)
    if m:
        return _conv_norm(f'backbone.conv1.{m.group(1)}', m.group(2), 'conv', 'norm',
                          _TORCH_BN, True, dst=('conv', 'norm'))
    m = re.fullmatch(r'res_layers\.(\d+)\.blocks\.(\d+)\.(.+)', rest)
    if not m:
        return None
    s, i, tail = int(m.group(1)), int(m.group(2)), m.group(3)
    block = resnet_block_name(s + 2, i, stage_counts.get(s, 0))
    # vd stride-2 shortcut: short.conv.{conv,norm} (pool + conv) in both, else short.{conv,norm}
    m = re.fullmatch(r'(branch2[abc]|short(?:\.conv)?)\.((?:conv|norm)\.\w+)', tail)
    if not m:
        return None
    return _conv_norm(f'backbone.res{s + 2}.{block}.{m.group(1)}', m.group(2), 'conv', 'norm',
                      _TORCH_BN, True, dst=('conv', 'norm'))


def _neck(rest, layout):
    torch_layout = layout == 'rtdetrv2_pytorch'
    bn_table = _TORCH_BN if torch_layout else _PADDLE_BN
    m = re.fullmatch(r'input_proj\.(\d+)\.(.+)', rest)
    if m:
        conv, norm = ('conv', 'norm') if torch_layout else ('0', '1')
        return _conv_norm(f'neck.input_proj.{m.group(1)}', m.group(2), conv, norm, bn_table,
                          torch_layout)
    m = re.fullmatch(r'encoder\.(\d+)\.layers\.(\d+)\.(.+)', rest)
    if m:
        return _attention(f'neck.encoder.{m.group(1)}.{m.group(2)}', m.group(3), torch_layout)
    m = re.fullmatch(r'((?:fpn|pan)_blocks\.\d+\.bottlenecks\.\d+)\.conv\.(weight|bias)', rest)
    if m:
        return [(f'neck.{m.group(1)}.fused.{m.group(2)}', 'repvgg_fused')]
    m = re.fullmatch(r'((?:lateral|downsample)_convs\.\d+|(?:fpn|pan)_blocks\.\d+\.conv[123]|'
                     r'(?:fpn|pan)_blocks\.\d+\.bottlenecks\.\d+\.conv[12])\.(.+)', rest)
    if m:
        norm = 'norm' if torch_layout else 'bn'
        return _conv_norm(f'neck.{m.group(1)}', m.group(2), 'conv', norm, bn_table, torch_layout)
    return None


def _decoder(rest, layout):
    torch_layout = layout == 'rtdetrv2_pytorch'
    bn_table = _TORCH_BN if torch_layout else _PADDLE_BN
    linear = 'transpose' if torch_layout else 'copy'
    m = re.fullmatch(r'input_proj\.(\d+)\.(.+)', rest)
    if m:
        return _conv_norm(f'transformer.input_proj.{m.group(1)}', m.group(2), 'conv', 'norm',
                          bn_table, torch_layout)
    m = re.fullmatch(r'decoder\.layers\.(\d+)\.(.+)', rest)
    if m:
        return _attention(f'transformer.layers.{m.group(1)}', m.group(2), torch_layout)
    if rest in ('anchors', 'valid_mask'):
        return [('', 'drop:derived buffer (anchors are computed for each input size)')]
    if rest == 'denoising_class_embed.weight':
        return [(f'transformer.{rest}', 'copy' if torch_layout else 'dn_pad')]
    enc_output = {'proj': 'enc_output_proj', 'norm': 'enc_output_norm'} if torch_layout else \
        {'0': 'enc_output_proj', '1': 'enc_output_norm'}
    m = re.fullmatch(r'enc_output\.(\w+)\.(weight|bias)', rest)
    if m and m.group(1) in enc_output:
        dst = enc_output[m.group(1)]
        kind = linear if (dst == 'enc_output_proj' and m.group(2) == 'weight') else 'copy'
        return [(f'transformer.{dst}.{m.group(2)}', kind)]
    m = re.fullmatch(r'(query_pos_head\.layers\.\d+|enc_score_head|enc_bbox_head\.layers\.\d+|'
                     r'dec_score_head\.\d+|dec_bbox_head\.\d+\.layers\.\d+)\.(weight|bias)', rest)
    if m:
        return [(f'transformer.{rest}', linear if m.group(2) == 'weight' else 'copy')]
    return None


def translate(name, layout, stage_counts):
    """Target names and transforms for one source tensor (see module docstring).

    Args:
        name (str): source name, any ``module.`` prefix removed.
        layout (str): one of :data:`LAYOUTS`.
        stage_counts (dict): torch backbone blocks per stage index (0..3), for ppdet's
            ResNet-101 block names.

    Returns:
        list[tuple[str, str]] | None
    """
    head, _, rest = name.partition('.')
    if head == 'backbone':
        return _backbone(rest, layout, stage_counts)
    if (head, layout) in (('encoder', 'rtdetrv2_pytorch'), ('neck', 'paddledet_develop')):
        return _neck(rest, layout)
    if (head, layout) in (('decoder', 'rtdetrv2_pytorch'), ('transformer', 'paddledet_develop')):
        return _decoder(rest, layout)
    return None
