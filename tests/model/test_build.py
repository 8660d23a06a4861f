"""The builders: tiny forward shapes, the full layout on the meta device, strict pretrained loading, LoRA."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from model.build import WeightsMismatch, apply_lora, build_mllm, build_model, build_sam, load_sam_weights
from model.config import ModelConfig, SegConfig
from model.tokenizer import MODEL_SPECIALS

# Published shapes of MedSAM / SAM ViT-B (``medsam_vit_b.pth`` = ``sam_vit_b_01ec64.pth`` layout).
SAM_VIT_B = {
    "image_encoder.pos_embed": (1, 64, 64, 768),
    "image_encoder.patch_embed.proj.weight": (768, 3, 16, 16),
    "image_encoder.blocks.0.attn.rel_pos_h": (27, 64),
    "image_encoder.blocks.2.attn.rel_pos_h": (127, 64),
    "image_encoder.blocks.11.mlp.lin2.weight": (768, 3072),
    "image_encoder.neck.0.weight": (256, 768, 1, 1),
    "image_encoder.neck.2.weight": (256, 256, 3, 3),
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
    "prompt_encoder.point_embeddings.3.weight": (1, 256),
    "prompt_encoder.no_mask_embed.weight": (1, 256),
    "prompt_encoder.mask_downscaling.6.weight": (256, 16, 1, 1),
    "mask_decoder.iou_token.weight": (1, 256),
    "mask_decoder.mask_tokens.weight": (4, 256),
    "mask_decoder.transformer.layers.1.cross_attn_token_to_image.q_proj.weight": (128, 256),
    "mask_decoder.output_upscaling.0.weight": (256, 64, 2, 2),
    "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight": (32, 256),
    "mask_decoder.iou_prediction_head.layers.2.weight": (4, 256),
}
SAM_VIT_B_PARAMETERS, SAM_VIT_B_KEYS = 93_735_472, 314

# LLaVA-Med v1.5 Mistral-7B converted to transformers, as transformers 5 names the modules (on disk the
# converted files say language_model.model.*, vision_tower.vision_model.*: see the loading test below).
LLAVA_MED = {
    "model.language_model.embed_tokens.weight": (32064, 4096),
    "model.language_model.layers.31.self_attn.q_proj.weight": (4096, 4096),
    "model.language_model.layers.0.self_attn.k_proj.weight": (1024, 4096),
    "model.language_model.layers.0.self_attn.v_proj.weight": (1024, 4096),
    "model.language_model.layers.0.mlp.gate_proj.weight": (14336, 4096),
    "model.language_model.layers.0.mlp.down_proj.weight": (4096, 14336),
    "model.language_model.norm.weight": (4096,),
    "lm_head.weight": (32064, 4096),
    "model.vision_tower.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
    "model.vision_tower.embeddings.position_embedding.weight": (577, 1024),
    "model.vision_tower.encoder.layers.23.self_attn.q_proj.weight": (1024, 1024),
    "model.vision_tower.pre_layrnorm.weight": (1024,),
    "model.multi_modal_projector.linear_1.weight": (4096, 1024),
    "model.multi_modal_projector.linear_2.weight": (4096, 4096),
}
MISTRAL_7B_PARAMETERS = 7_241_732_096 + 2 * 64 * 4096  # vocabulary padded from 32000 to 32064


def llava_med_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer with LLaVA-Med's id layout: 32000 text ids, <image> = 32000, <pad> = 32001."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, 32000)}
    vocab |= {"<image>": 32000, "<pad>": 32001}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": MODEL_SPECIALS}, replace_extra_special_tokens=False)
    return tok


def test_full_architecture_matches_llava_med_and_medsam_layouts():
    tokenizer = llava_med_tokenizer()
    assert tokenizer.convert_tokens_to_ids(["<image>", "[SEG]", "[BBOXINPUT]"]) == [32000, 32002, 32004]
    with torch.device("meta"):
        model = build_model(ModelConfig.full(), tokenizer, load_pretrained=False)
    params = dict(model.named_parameters())
    for name, shape in LLAVA_MED.items():
        assert tuple(params[f"mllm.{name}"].shape) == shape, name
    lm = sum(p.numel() for n, p in params.items() if n.startswith(("mllm.model.language_model.", "mllm.lm_head.")))
    assert lm == MISTRAL_7B_PARAMETERS
    layers = {n.split(".")[4] for n in params if n.startswith("mllm.model.language_model.layers.")}
    assert layers == {str(i) for i in range(32)}
    sam = model.sam.state_dict()
    assert len(sam) == SAM_VIT_B_KEYS and sum(p.numel() for p in model.sam.parameters()) == SAM_VIT_B_PARAMETERS
    for name, shape in SAM_VIT_B.items():
        assert tuple(sam[name].shape) == shape, name
    # [SEG] path and JCM at the paper's sizes: d -> d -> 256, 256 -> 512 -> 512 -> {1, 256}
    assert [tuple(m.weight.shape) for m in model.text_hidden_fcs if hasattr(m, "weight")] == [(4096, 4096), (256, 4096)]
    assert tuple(model.bbox_encoder.weight.shape) == (4096, 4)
    assert tuple(model.jcm.judge.mlp[0].weight.shape) == (512, 256)
    assert tuple(model.jcm.corrector.mlp[-1].weight.shape) == (256, 512)
    assert model.token_ids == {"image": 32000, "seg": 32002, "crop": 32003, "box": 32004}


def test_a_medsam_layout_state_dict_loads_strictly_and_a_wrong_one_is_listed(tmp_path):
    torch.manual_seed(0)
    state = build_sam(SegConfig()).state_dict()  # random weights in the MedSAM ViT-B layout
    path = tmp_path / "medsam_vit_b.pth"
    torch.save(state, path)
    sam = build_sam(SegConfig(checkpoint=str(path)))
    assert torch.equal(sam.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])
    assert torch.equal(sam.image_encoder.pos_embed, state["image_encoder.pos_embed"])

    del state["mask_decoder.iou_token.weight"]
    state["image_encoder.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(WeightsMismatch, match=r"1 missing: mask_decoder.iou_token.weight; 1 unexpected: "
                                              r"image_encoder.extra.weight"):
        load_sam_weights(build_sam(SegConfig()), path)


def test_a_converted_llava_checkpoint_loads_strictly_from_its_directory(tmp_path, phantom_tokenizer):
    """The on-disk names of transformers' ``convert_llava_weights_to_hf`` output load; a missing key is listed."""
    cfg = ModelConfig.tiny()
    cfg.mllm.text["vocab_size"] = len(phantom_tokenizer)
    source = build_mllm(cfg.mllm, phantom_tokenizer)
    on_disk = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
               ("model.vision_tower.", "vision_tower.vision_model."), ("model.multi_modal_projector.",
                                                                      "multi_modal_projector.")]
    renamed = {}
    for name, tensor in source.state_dict().items():
        for new, old in on_disk:
            name = name.replace(new, old) if name.startswith(new) else name
        renamed[name] = tensor.clone()
    source.config.save_pretrained(tmp_path)
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    cfg.mllm.pretrained = str(tmp_path)
    loaded = build_mllm(cfg.mllm, phantom_tokenizer)
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    del renamed["multi_modal_projector.linear_2.bias"]
    save_file(renamed, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsMismatch, match="multi_modal_projector.linear_2.bias"):
        build_mllm(cfg.mllm, phantom_tokenizer)


def test_tiny_model_runs_every_step_with_the_right_shapes(tiny_model):
    model, cfg = tiny_model
    image = torch.randint(0, 255, (3, 150, 200), dtype=torch.uint8)
    enc = model.encode_image(image)
    assert enc.sam_embedding.shape == (1, 64, 24, 24) and enc.image_features.shape == (64, 192)
    assert enc.input_size == (144, 192) and enc.original_size == (150, 200)
    mask = torch.zeros(150, 200, dtype=torch.bool)
    mask[20:60, 30:90] = True
    crop, box = model.reference_tokens(image, [mask.numpy(), None])
    assert crop.shape == box.shape == (2, 192)
    logits = model.decode_masks(enc.sam_embedding, torch.randn(3, 64), enc.input_size, enc.original_size)
    assert logits.shape == (3, 150, 200)
    ids = torch.tensor([[1, model.token_ids["seg"], 2]])
    with pytest.raises(ValueError, match="0 image tokens in the sequence but 64 image embeddings"):
        model.embed(ids, image_features=enc.image_features)


def test_the_guided_filter_snaps_a_coarse_mask_to_the_image_edges(tiny_model):
    model, _ = tiny_model
    yy, xx = torch.meshgrid(torch.arange(192.0), torch.arange(192.0), indexing="ij")
    truth = (yy - 80.5) ** 2 + (xx - 101.3) ** 2 < 6.5**2  # a nodule-sized disc, off the decoder's 2-pixel grid
    image = (50 + 150 * truth.to(torch.uint8)).expand(3, -1, -1)
    image = (image + torch.randint(0, 8, image.shape, generator=torch.Generator().manual_seed(0))).to(torch.uint8)
    coarse = torch.nn.functional.avg_pool2d(truth[None, None].float(), 2)  # what a 96 x 96 decoder output can hold
    low_res = 8 * (torch.nn.functional.avg_pool2d(coarse, 5, stride=1, padding=2) - 0.5)  # and blurred

    def dice(logits):
        mask = logits[0, 0] > 0
        return float(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))

    plain = dice(model.postprocess(low_res, (192, 192), (192, 192)))
    refined = dice(model.postprocess(low_res, (192, 192), (192, 192), image))
    assert plain < 0.85 and refined > 0.98
    one = model.postprocess(low_res, (192, 192), (192, 192), image)
    batch = model.postprocess(torch.cat([-low_res, low_res]), (192, 192), (192, 192), image)
    assert torch.allclose(batch[1:], one, atol=1e-5)  # masks refined together as each one alone
    model.guided_filter_eps = None  # a config without refinement keeps SAM's upsampling alone
    assert dice(model.postprocess(low_res, (192, 192), (192, 192), image)) == plain


def test_lora_lands_on_the_language_model_q_and_v_only(tiny_model):
    model, _ = tiny_model
    apply_lora(model)
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and all(".language_model." in n and (".q_proj." in n or ".v_proj." in n) for n in lora)
    assert len(lora) == 2 * 2 * 3  # A and B, q and v, 3 layers
    assert not any("vision_tower" in n for n in lora)
    assert json.loads(json.dumps(model.mllm.peft_config["default"].to_dict(), default=str))["r"] == 8
