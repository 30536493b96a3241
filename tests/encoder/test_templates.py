"""Exact rendered strings: the prompt is the method, so every character is pinned."""

import pytest

from prompteol import ConfigError, Demonstration, get_template, normalize_sentence
from prompteol.encoder.prompts.templates import TEMPLATES, Template, parse_demonstration

S = "A man is playing a guitar."
D1 = Demonstration("A man is smoking.", "Smoking")
D2 = Demonstration("meat from a deer.", "Venison")


@pytest.mark.parametrize(
    "name, demos, expected",
    [
        ("prompteol", (), 'This sentence : "A man is playing a guitar." means in one word:"'),
        (
            "prompteol",
            (D1,),
            'This sentence : "A man is smoking." means in one word:"Smoking".'
            'This sentence : "A man is playing a guitar." means in one word:"',
        ),
        (
            "prompteol",
            (D1, D2),
            'This sentence : "A man is smoking." means in one word:"Smoking".'
            'This sentence : "meat from a deer." means in one word:"Venison".'
            'This sentence : "A man is playing a guitar." means in one word:"',
        ),
        ("promptbert", (), 'This sentence : "A man is playing a guitar." means'),
        (
            "promptbert",
            (D1,),
            'This sentence : "A man is smoking." means Smoking.This sentence : "A man is playing a guitar." means',
        ),
        (
            "promptbert",
            (D1, D2),
            'This sentence : "A man is smoking." means Smoking.This sentence : "meat from a deer." means Venison.'
            'This sentence : "A man is playing a guitar." means',
        ),
        ("raw", (), "A man is playing a guitar."),
    ],
)
def test_render_exact(name, demos, expected):
    assert TEMPLATES[name].render(S, demos) == expected


def test_prefix_plus_sentence_plus_after_is_render():
    t = TEMPLATES["prompteol"]
    assert t.prefix((D1,)) + S + t.after == t.render(S, (D1,))
    assert t.after == '" means in one word:"'


def test_raw_template_refuses_demonstrations():
    with pytest.raises(ConfigError, match="does not take demonstrations"):
        TEMPLATES["raw"].render(S, (D1,))


def test_braces_in_sentence_are_kept():
    assert TEMPLATES["raw"].render("{x} {sentence}") == "{x} {sentence}"


def test_custom_template_and_errors():
    t = get_template('Summarise "{sentence}" in one word:"')
    assert t.name == "custom" and t.render("x", (D1,)).endswith('Summarise "x" in one word:"')
    with pytest.raises(ConfigError, match="valid presets"):
        get_template("nope")
    with pytest.raises(ConfigError, match="once .or twice for an echo template"):
        Template("bad", "{sentence} {sentence} {sentence}")
    with pytest.raises(ConfigError, match="takes no demonstrations"):
        Template("bad", "{sentence} {sentence}", answer='{word}".')
    echo = Template("e", "Say {sentence}: {sentence}")
    assert echo.echo and echo.render("x") == "Say x: x" and echo.before_second_copy("x") == "Say x: "


@pytest.mark.parametrize(
    "value, expected",
    [
        ("A man is smoking|Smoking", Demonstration("A man is smoking", "Smoking")),
        ("a|b|c", Demonstration("a|b", "c")),
        (("x", "y"), Demonstration("x", "y")),
        ({"sentence": "x", "word": "y"}, Demonstration("x", "y")),
    ],
)
def test_parse_demonstration(value, expected):
    assert parse_demonstration(value) == expected


@pytest.mark.parametrize("value", ["no separator", "sentence|", 3])
def test_parse_demonstration_errors(value):
    with pytest.raises(ConfigError):
        parse_demonstration(value)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A man is smoking", "A man is smoking."),
        ("A man is smoking.", "A man is smoking."),
        ('He said "hi"', "He said 'hi'"),  # ends with a quote: no period; quotes replaced
        ("Is it raining?", "Is it raining."),
        ("it's 'fine'", "it's 'fine'"),
        ("", ""),
        ('"quoted"?', "'quoted'."),
    ],
)
def test_normalize_sentence(raw, expected):
    assert normalize_sentence(raw) == expected
