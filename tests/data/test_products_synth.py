"""The embedded products generator: label rates, nesting, groups, determinism, images, signal in text and images."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmstack.data.products import load_catalogue
from mmstack.data.products_synth import ProductsGenerator, agree, to_csv_frame, write_products
from mmstack.data.products_vocab import CATEGORIES, GENDERED_KINDS

GENDERED_CATEGORIES = {c for c, (_, kind, _) in CATEGORIES.items() if kind in GENDERED_KINDS}


@pytest.fixture(scope="module")
def world():
    """3,000 listings without images: the truth (before masking) and the published labels."""
    gen = ProductsGenerator(3000, seed=3)
    truth, _ = gen.build()
    return truth, gen.mask_labels(truth)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("products") / "input"
    counts = write_products(out, rows=400, seed=5, image_size=(40, 40))
    return out, counts


def test_label_rates_and_missing_shares(world):
    truth, published = world
    adult = truth["isadult"].astype(float)
    assert 0.01 <= adult.mean() <= 0.04
    assert 10 <= truth["category"].nunique() <= 15 and 60 <= truth["sub_category"].nunique() <= 120
    sizes = truth["sub_category"].value_counts()
    assert sizes.max() > 4 * sizes.median(), "sub-categories of unequal sizes"
    for col in ("category", "sub_category", "price", "isadult"):
        assert published[col].isna().mean() == pytest.approx(0.12, abs=0.01), col
    clothes = truth["category"].isin(GENDERED_CATEGORIES)
    for col in ("gender", "age_group"):
        assert published.loc[clothes, col].isna().mean() == pytest.approx(0.12, abs=0.02), col
    assert set(truth["gender"].dropna()) == {"female", "male", "unisex"}
    assert set(truth["age_group"].dropna()) == {"adult", "child"}
    assert 0.05 < (truth.loc[clothes, "age_group"] == "child").mean() < 0.25


def test_gender_and_age_only_for_clothes_and_shoes(world):
    truth, _ = world
    clothes = truth["category"].isin(GENDERED_CATEGORIES)
    assert truth.loc[~clothes, ["gender", "age_group"]].isna().all().all()
    assert truth.loc[clothes, ["gender", "age_group"]].notna().all().all()
    dresses = truth.loc[truth["sub_category"] == "Платья", "gender"]
    assert (dresses == "female").mean() > 0.85


def test_sub_category_nested_in_exactly_one_category(world):
    _, published = world
    both = published.dropna(subset=["category", "sub_category"])
    assert both.groupby("sub_category")["category"].nunique().max() == 1
    adult = both.loc[published["isadult"].astype(float) == 1.0, "category"].unique()
    assert list(adult) == ["Товары для взрослых"]


def test_groups_cover_a_fifth_of_rows_with_two_to_five_listings(world):
    truth, published = world
    assert (truth["group_size"] > 1).mean() == pytest.approx(0.20, abs=0.02)
    sizes = truth.groupby("group").size()
    assert sizes.min() == 1 and sizes.max() == 5 and set(sizes[sizes > 1]) == {2, 3, 4, 5}
    assert (truth.groupby("group")["sub_category"].nunique() == 1).all(), "a group is one product"
    hidden = published["group"].isna()
    assert hidden.mean() == pytest.approx(0.15, abs=0.02)
    by_product = hidden.groupby(published["product"]).agg(["min", "max"])
    assert (by_product["min"] == by_product["max"]).all(), "groups are hidden whole"


def test_repeated_listings_reword_the_title_and_keep_the_price_near(world):
    truth, _ = world
    grouped = truth[truth["group_size"] > 1]
    titles = grouped.groupby("group")["title"].nunique()
    assert (titles > 1).mean() > 0.7, "most groups list the product under several titles"
    spread = grouped.groupby("group")["price"].agg(lambda p: p.max() / p.min())
    assert spread.max() < 1.5 and (spread == 1.0).mean() > 0.2


def test_price_has_a_heavy_tail_tied_to_sub_category(world):
    truth, _ = world
    price = truth["price"]
    assert price.min() > 0 and price.max() / price.median() > 10
    logp = np.log(price)
    between = logp.groupby(truth["sub_category"]).transform("mean")
    assert np.corrcoef(logp, between)[0, 1] > 0.6, "sub-category explains much of the log price"


def test_text_is_russian_with_html_empty_and_mixed_attributes(world):
    truth, _ = world
    desc = truth["description"]
    assert 0.15 < desc.isna().mean() < 0.25
    assert desc.dropna().str.contains("<p>").mean() == pytest.approx(0.10, abs=0.03)
    assert desc.dropna().str.contains(r"\. [А-ЯЁ]").mean() > 0.5, "several sentences"
    attrs = truth["attributes"].dropna()
    assert 0.35 < attrs.str.startswith("{").mean() < 0.65 and attrs.str.contains("Цвет").mean() > 0.95
    assert truth["title"].str.contains(r"[а-яё]", case=False).mean() > 0.95
    assert agree("женск|ий|ая|ое|ие", "f") == "женская" and agree("хаки||||", "p") == "хаки"


def test_title_predicts_category_above_chance_but_not_perfectly(world):
    truth, _ = world
    sample = truth.iloc[:1500]
    x = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True).fit_transform(sample["title"])
    acc = cross_val_score(LogisticRegression(C=3, max_iter=1000), x, sample["category"], cv=3).mean()
    majority = sample["category"].value_counts(normalize=True).iloc[0]
    assert majority + 0.4 < acc < 0.98


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    def digest(folder):
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_products(a, rows=40, seed=9, image_size=(24, 24))
    write_products(b, rows=40, seed=9, image_size=(24, 24), n_jobs=2)
    write_products(c, rows=40, seed=10, image_size=(24, 24))
    assert digest(a) == digest(b)
    assert (a / "products.csv").read_bytes() != (c / "products.csv").read_bytes()


def test_loader_reads_what_the_generator_writes(written):
    out, counts = written
    cat = load_catalogue(out)
    assert len(cat) == counts["products.csv"] == 400
    assert cat.label_columns == ["category", "sub_category", "price", "gender", "age_group", "isadult", "group"]
    n_images = [len(names) for names in cat.images]
    assert min(n_images) >= 1 and max(n_images) <= 3 and sum(n_images) == counts["images"]
    assert not cat.problems, "no missing images, no unparsable attributes"
    for row in range(0, 400, 37):
        for k in range(len(cat.images[row])):
            img = cat.open_image(row, k)
            assert img is not None and img.size == (40, 40)
    assert not cat.problems
    frame = pd.read_csv(out / "products.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(to_csv_frame(pd.DataFrame(columns=frame.columns)).columns)
    assert set(frame["isadult"]) <= {"true", "false", ""}


def test_mean_image_colour_predicts_category_above_chance(written):
    out, _ = written
    cat = load_catalogue(out)
    known = cat.labels["category"].notna().to_numpy()
    colour = np.array([np.asarray(cat.open_image(r), dtype=float).mean((0, 1)) for r in np.flatnonzero(known)])
    y = cat.labels["category"][known].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=10, max_iter=3000))
    acc = cross_val_score(model, colour, y, cv=3).mean()
    majority = pd.Series(y).value_counts(normalize=True).iloc[0]
    assert acc > majority + 0.12, "the category tints the background"


def test_same_product_images_are_near_duplicates(written):
    out, _ = written
    cat = load_catalogue(out)
    groups = cat.labels["group"]
    pixels = np.array([np.asarray(cat.open_image(r).resize((16, 16)), dtype=float).ravel() for r in range(len(cat))])
    pixels -= pixels.mean(1, keepdims=True)
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
    sim = pixels @ pixels.T
    np.fill_diagonal(sim, -1)
    rows = [r for r in range(len(cat)) if pd.notna(groups[r]) and (groups == groups[r]).sum() > 1]
    same = np.mean([groups[int(np.argmax(sim[r]))] == groups[r] for r in rows])
    assert same > 0.7, "a repeated listing's nearest first image is mostly its own product's"
