"""The sandbox's copy of Telegram's text rules: what parses, what fails, and how it is worded."""

from __future__ import annotations

import pytest

from bot.sandbox.errors import ApiError
from bot.sandbox.formatting import (
    LinkError,
    check_link,
    command_entities,
    message_text,
    parse_html,
)


def test_tags_become_entities_with_utf16_offsets() -> None:
    text, entities = parse_html("✈️ <b>BER → FCO</b> 😀<i>€89</i>")
    assert text == "✈️ BER → FCO 😀€89"
    bold = {"type": "bold", "offset": 3, "length": 9}
    # the emoji is two UTF-16 units, so the italic starts two units after it
    italic = {"type": "italic", "offset": 3 + 9 + 1 + 2, "length": 3}
    assert entities == [bold, italic]


def test_synonyms_links_mentions_and_code_blocks() -> None:
    source = (
        "<strong>a</strong><em>b</em><ins>c</ins><del>d</del><tg-spoiler>e</tg-spoiler>"
        '<a href="https://example.com/x?a=1&amp;b=2">f</a><a href="tg://user?id=42">g</a>'
        '<pre><code class="language-python">h</code></pre><code>i</code>'
        "<blockquote expandable>j</blockquote>"
    )
    text, entities = parse_html(source)
    assert text == "abcdefghij"
    kinds = [
        (e["type"], e.get("url") or e.get("language") or e.get("user", {}).get("id"))
        for e in entities
    ]
    assert kinds == [
        ("bold", None),
        ("italic", None),
        ("underline", None),
        ("strikethrough", None),
        ("spoiler", None),
        ("text_link", "https://example.com/x?a=1&b=2"),
        ("text_mention", 42),
        ("pre", "python"),
        ("code", None),
        ("expandable_blockquote", None),
    ]


def test_only_four_named_references_and_numeric_ones_are_decoded() -> None:
    text, _ = parse_html("&lt;&gt;&amp;&quot; &#8364; &#x20AC; &nbsp; AT&T 3 > 2")
    assert text == '<>&" € € &nbsp; AT&T 3 > 2'


def test_unknown_attributes_are_ignored_like_telegram() -> None:
    text, entities = parse_html('<b class="x" data-y=1>bold</b>')
    assert text == "bold"
    assert entities == [{"type": "bold", "offset": 0, "length": 4}]


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("<p>para</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("price < 100", 'Unsupported start tag "" at byte offset 6'),
        ("€<div>", 'Unsupported start tag "div" at byte offset 3'),  # € is 3 bytes in UTF-8
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<b", "Unclosed start tag at byte offset 0"),
        ("<span>s</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ('<a href="x>y</a>', "Unclosed start tag at byte offset 0"),
    ],
)
def test_broken_html_fails_with_telegrams_words(source: str, detail: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_html(source)
    assert caught.value.error_code == 400
    assert caught.value.description == f"Bad Request: can't parse entities: {detail}"


def test_length_is_counted_after_parsing_and_trimming() -> None:
    text, _ = message_text("<b>" + "&amp;" * 4096 + "</b>", "HTML", None)
    assert len(text) == 4096
    text, entities = message_text("  \n<b>hi</b>  ", "HTML", None)
    assert (text, entities) == ("hi", [{"type": "bold", "offset": 0, "length": 2}])
    with pytest.raises(ApiError, match="message is too long"):
        message_text("x" * 4097, None, None)
    with pytest.raises(ApiError, match="text must be non-empty"):
        message_text("<b> </b>", "HTML", None)
    with pytest.raises(ApiError, match="message text is empty"):
        message_text("", None, None)


def test_markdown_is_refused_loudly_rather_than_half_parsed() -> None:
    with pytest.raises(ApiError, match="not supported by the sandbox"):
        message_text("*bold*", "MarkdownV2", None)


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://example.com/pay?x=1", "https://example.com/pay?x=1"),
        ("http://127.0.0.1:8080/checkout", "http://127.0.0.1:8080/checkout"),
        ("example.com", "http://example.com"),
        ("tg://user?id=5", "tg://user?id=5"),
        ("http://localhost:8080/checkout", LinkError("Wrong HTTP URL")),
        ("javascript:alert(1)", LinkError("Unsupported URL protocol")),
        ("ftp://example.com", LinkError("Unsupported URL protocol")),
        ("https://", LinkError("URL host is empty")),
    ],
)
def test_links_follow_telegrams_rules(link: str, expected: str | LinkError) -> None:
    assert check_link(link) == expected


def test_commands_in_user_text_are_marked() -> None:
    assert command_entities("/start abc") == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert command_entities("😀 /help@travel_bot now") == [
        {"type": "bot_command", "offset": 3, "length": 16}
    ]
    assert command_entities("a/b and http://x/y") == []
