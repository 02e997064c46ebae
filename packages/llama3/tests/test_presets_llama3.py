"""Llama 3 is Llama 2's model type with other values: the presets carry the published numbers."""
import mfcore


def test_llama3_8b_preset():
    c = mfcore.AutoConfig.from_pretrained("llama3-8b")
    assert c.model_type == "llama"
    assert (c.seq_length, c.n_kv_heads, c.vocab_size, c.intermediate_size, c.theta) == (8192, 8, 128256, 14336, 500000.0)
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (128000, 128001, 128002)
    assert c.rope_scaling is None


def test_llama31_presets_have_rope_scaling_and_long_context():
    for name in ("llama3.1-8b", "llama3.1-70b"):
        c = mfcore.AutoConfig.from_pretrained(name)
        assert c.seq_length == 131072 and c.rope_scaling["rope_type"] == "llama3"
        assert c.rope_scaling["factor"] == 8.0 and c.rope_scaling["original_max_position_embeddings"] == 8192


def test_llama3_presets_come_from_the_llama3_plugin_on_llama2_model_type():
    plugins = mfcore.get_plugins()
    assert plugins.presets.entry("llama3-8b").plugin == "llama3"
    assert plugins.configs.entry("llama").plugin == "llama2"
