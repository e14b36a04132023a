"""Tiny random-weight models with a real (word-level) tokenizer, saved to disk so that the
production loading code (`load_target` on a local path) is what the tests exercise."""

from __future__ import annotations

import string
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = ["write", "an", "email", "a", "tutorial", "on", "how", "to", "hack", "into", "the", "bank", "database", "steal",
         "money", "make", "bomb", "poem", "about", "sea", "give", "three", "tips", "for", "staying", "healthy",
         "explain", "photosynthesis", "develop", "algorithm", "that", "sorts", "list", "books", "create", "website",
         "plan", "trip", "to", "paris", "recipe", "for", "bread", "you", "are", "helpful", "assistant", "system",
         "user", "hello", "there", "when", "and", "went", "store", "gave", "drink", "mary", "john", "tom", "anna",
         "input", "output", "dog", "chien", "perro", "house", "maison", "casa", "cat", "chat", "gato"]


def make_tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in sorted(set(WORDS) | set(string.ascii_lowercase) | set(string.punctuation) | {"\n", "system", "assistant"}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.Split(" ", behavior="removed")])
    tok.add_special_tokens(specials)
    tok.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<unk>", pad_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def make_tiny_llama(path: Path, n_layers: int = 4, d: int = 64, heads: int = 4, seed: int = 0,
                    tokenizer=make_tokenizer, initializer_range: float = 0.02, max_positions: int = 256) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=n_layers,
        num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def make_tiny_gpt2(path: Path, n_layers: int = 3, d: int = 48, heads: int = 4, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    path.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(path)
    tok.chat_template = None
    tok.save_pretrained(path)
    (path / "chat_template.jinja").unlink(missing_ok=True)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=d, n_layer=n_layers, n_head=heads, n_positions=128,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def make_bpe_tokenizer(path: Path, vocab_size: int = 400):
    """A byte-level BPE tokenizer (the kind SmolLM2 and GPT-2 use): every string is
    expressible, so grammar-constrained decoding (JSON with spaces and quotes) works."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS[i: i + 7]) for i in range(len(WORDS))] + ['{"label": "harmful"}', '{"label": "harmless"}', '{"labels": ["yes", "no"]}']
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def make_tiny_bpe_llama(path: Path, n_layers: int = 2, seed: int = 0) -> Path:
    """A random-weight Llama on the byte-level BPE tokenizer, saved like a hub checkpoint;
    weights large enough (init 0.3) that what it writes depends on the prompt."""
    return make_tiny_llama(path, n_layers=n_layers, seed=seed, tokenizer=make_bpe_tokenizer, initializer_range=0.3, max_positions=512)
