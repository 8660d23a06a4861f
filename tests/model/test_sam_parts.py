import subprocess
import sys
from functools import partial

import torch


def test_sam_parts_import_without_torchvision_and_run_a_tiny_sam():
    code = (
        "import sys\n"
        "from model.sam_parts import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer\n"
        "assert 'torchvision' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    from model.sam_parts import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

    encoder = ImageEncoderViT(img_size=64, patch_size=8, embed_dim=32, depth=1, num_heads=2, out_chans=32,
                              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), window_size=0, global_attn_indexes=())
    prompt = PromptEncoder(embed_dim=32, image_embedding_size=(8, 8), input_image_size=(64, 64), mask_in_chans=8)
    decoder = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64,
                                                                           num_heads=2))
    embedding = encoder(torch.zeros(1, 3, 64, 64))  # (1, 32, 8, 8)
    sparse = torch.randn(1, 1, 32)  # a [SEG]-style prompt straight into the decoder
    dense = prompt.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 8, 8)
    masks, iou = decoder(image_embeddings=embedding, image_pe=prompt.get_dense_pe(), sparse_prompt_embeddings=sparse,
                         dense_prompt_embeddings=dense, multimask_output=False)
    assert masks.shape == (1, 1, 32, 32) and iou.shape == (1, 1)
