"""The sandbox Bot API seen through a real python-telegram-bot ``Bot``: limits and errors.

Each limit must surface as the exception PTB raises against Telegram, so code that handles
Telegram's failures can be tested here.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    ReplyParameters,
)
from telegram.error import BadRequest, EndPointNotFound, Forbidden, InvalidToken, RetryAfter

from bot.sandbox import EventKind, SandboxBotApi, SandboxUser
from bot.telegram_http import AiohttpRequest


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in rows]
    )


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxBotApi]:
    api = SandboxBotApi(callback_answer_timeout=2.0)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture(params=["httpx", "aiohttp"])
async def bot(sandbox: SandboxBotApi, request: pytest.FixtureRequest) -> AsyncIterator[Bot]:
    """PTB's default transport, and the bot's own (``bot.telegram_http``): Telegram's answers
    must surface as the same exceptions through both."""
    transport = AiohttpRequest() if request.param == "aiohttp" else None
    async with Bot(sandbox.token, base_url=sandbox.base_url, request=transport) as tg_bot:
        yield tg_bot


@pytest.fixture
async def traveller(sandbox: SandboxBotApi) -> SandboxUser:
    user = await sandbox.add_user(first_name="Sam", username="sam_travels")
    await sandbox.user_sends(user.id, "/start")
    return user


@pytest.fixture
def timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB warns on every RetryAfter unless opted in to timedelta values (and warnings fail)."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


async def test_get_me_and_a_wrong_token(sandbox: SandboxBotApi, bot: Bot) -> None:
    assert bot.username == sandbox.bot_username
    assert bot.id == sandbox.bot_id
    with pytest.raises(InvalidToken):
        async with Bot("987654321:not-the-sandbox-token-at-all", base_url=sandbox.base_url):
            pass


async def test_a_user_who_never_wrote_has_no_chat(sandbox: SandboxBotApi, bot: Bot) -> None:
    stranger = await sandbox.add_user(first_name="Kim")
    with pytest.raises(BadRequest, match=r"(?i)Chat not found"):
        await bot.send_message(stranger.id, "hello")
    with pytest.raises(BadRequest, match=r"(?i)Chat not found"):
        await bot.send_message("@sam_travels", "usernames are not chats for private users")


async def test_a_user_who_blocked_the_bot_is_forbidden(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    action = await sandbox.user_blocks_bot(traveller.id)
    assert action.update["my_chat_member"]["new_chat_member"]["status"] == "kicked"
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(traveller.id, "still there?")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(traveller.id, "typing")
    await sandbox.user_unblocks_bot(traveller.id)
    await bot.send_message(traveller.id, "welcome back")


async def test_text_is_1_to_4096_characters_after_parsing(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    await bot.send_message(traveller.id, "x" * 4096)
    sent = await bot.send_message(traveller.id, "<b>" + "&lt;" * 4096 + "</b>", parse_mode="HTML")
    assert sent.text == "<" * 4096
    with pytest.raises(BadRequest, match=r"(?i)Message is too long"):
        await bot.send_message(traveller.id, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)Message text is empty"):
        await bot.send_message(traveller.id, "")
    with pytest.raises(BadRequest, match=r"(?i)Text must be non-empty"):
        await bot.send_message(traveller.id, "<i> </i>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)Message is too long"):
        await bot.edit_message_text("y" * 4097, traveller.id, sent.message_id)


@pytest.mark.parametrize(
    "html",
    ["<b>Berlin", "<b>Rome</i>", "<p>Paris</p>", "1 < 2", "<span>x</span>", "</b>"],
)
async def test_broken_html_is_a_bad_request(bot: Bot, traveller: SandboxUser, html: str) -> None:
    with pytest.raises(BadRequest, match=r"(?i)^Can't parse entities: "):
        await bot.send_message(traveller.id, html, parse_mode="HTML")


async def test_sent_html_is_kept_as_text_html_and_buttons(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    markup = InlineKeyboardMarkup(
        [
            [InlineKeyboardButton("Pay €89", url="https://pay.example.com/s/1")],
            [InlineKeyboardButton("Back", callback_data="v3:back")],
        ]
    )
    sent = await bot.send_message(
        traveller.id, "<b>Total</b> &amp; fees: €89", parse_mode="HTML", reply_markup=markup
    )
    assert sent.text == "Total & fees: €89"
    assert sent.text_html == "<b>Total</b> &amp; fees: €89"
    stored = sandbox.last_bot_message(traveller.id)
    assert stored.message_id == sent.message_id
    assert stored.html == "<b>Total</b> &amp; fees: €89"
    assert stored.button_rows == [
        [("Pay €89", "https://pay.example.com/s/1")],
        [("Back", "v3:back")],
    ]
    assert stored.edit_count == 0
    assert not stored.deleted


async def test_callback_data_is_at_most_64_bytes(bot: Bot, traveller: SandboxUser) -> None:
    await bot.send_message(traveller.id, "ok", reply_markup=keyboard([("A", "x" * 64)]))
    with pytest.raises(BadRequest, match=r"(?i)Button_data_invalid"):
        await bot.send_message(traveller.id, "no", reply_markup=keyboard([("A", "x" * 65)]))
    # 22 characters but 66 bytes: the limit is in bytes
    with pytest.raises(BadRequest, match=r"(?i)Button_data_invalid"):
        await bot.send_message(traveller.id, "no", reply_markup=keyboard([("A", "€" * 22)]))


async def test_keyboard_size_limits(bot: Bot, traveller: SandboxUser) -> None:
    rows = [[(str(i * 8 + j), f"n{i * 8 + j}") for j in range(8)] for i in range(12)]
    rows.append([("96", "n96"), ("97", "n97"), ("98", "n98"), ("99", "n99")])
    await bot.send_message(traveller.id, "100 buttons", reply_markup=keyboard(*rows))
    with pytest.raises(BadRequest, match=r"(?i)Reply markup is too long"):
        await bot.send_message(traveller.id, "101", reply_markup=keyboard(*rows, [("100", "n100")]))
    with pytest.raises(BadRequest, match=r"(?i)Reply markup is too long"):
        await bot.send_message(
            traveller.id, "9 in a row", reply_markup=keyboard([(str(i), str(i)) for i in range(9)])
        )
    with pytest.raises(BadRequest, match=r"(?i)text buttons are unallowed"):
        await bot.send_message(
            traveller.id,
            "no action",
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("x")]]),
        )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:8080/checkout", "Wrong http url"),
        ("javascript:alert(1)", "Unsupported url protocol"),
    ],
)
async def test_url_buttons_need_real_links(
    bot: Bot, traveller: SandboxUser, url: str, reason: str
) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Pay", url=url)]])
    with pytest.raises(BadRequest, match=f"(?i){reason}"):
        await bot.send_message(traveller.id, "pay here", reply_markup=markup)


async def test_editing_rules(sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser) -> None:
    markup = keyboard([("Next ›", "v1:next")])
    sent = await bot.send_message(
        traveller.id, "<b>Page 1</b>", parse_mode="HTML", reply_markup=markup
    )
    with pytest.raises(
        BadRequest, match=r"(?i)Message is not modified: specified new message content"
    ):
        await bot.edit_message_text(
            "<b>Page 1</b>", traveller.id, sent.message_id, parse_mode="HTML", reply_markup=markup
        )
    # the same words without the bold are a change; leaving reply_markup out removes the keyboard
    edited = await bot.edit_message_text("Page 1", traveller.id, sent.message_id)
    assert isinstance(edited, Message)
    assert edited.reply_markup is None
    with pytest.raises(BadRequest, match=r"(?i)Message is not modified"):
        await bot.edit_message_reply_markup(traveller.id, sent.message_id)
    await bot.edit_message_reply_markup(traveller.id, sent.message_id, reply_markup=markup)
    stored = sandbox.message(traveller.id, sent.message_id)
    assert (stored.text, stored.edit_count, stored.button_rows) == (
        "Page 1",
        2,
        [[("Next ›", "v1:next")]],
    )

    with pytest.raises(BadRequest, match=r"(?i)Message to edit not found"):
        await bot.edit_message_text("x", traveller.id, 9999)
    other = await sandbox.add_user(first_name="Ana")
    await sandbox.user_sends(other.id, "hi")
    with pytest.raises(BadRequest, match=r"(?i)Message to edit not found"):
        await bot.edit_message_text("x", other.id, sent.message_id)
    users_message = sandbox.transcript(traveller.id)[0]
    assert not users_message.from_bot
    with pytest.raises(BadRequest, match=r"(?i)Message can't be edited"):
        await bot.edit_message_text("x", traveller.id, users_message.message_id)

    assert await bot.delete_message(traveller.id, sent.message_id)
    assert sandbox.message(traveller.id, sent.message_id).deleted
    with pytest.raises(BadRequest, match=r"(?i)Message to delete not found"):
        await bot.delete_message(traveller.id, sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)Message to edit not found"):
        await bot.edit_message_text("gone", traveller.id, sent.message_id)


async def test_callback_queries_are_answered_once_in_time(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    sent = await bot.send_message(traveller.id, "Pick", reply_markup=keyboard([("One", "v1:1")]))
    first = await sandbox.user_presses(traveller.id, sent.message_id, "v1:1")
    query_id = first.update["callback_query"]["id"]
    assert not sandbox.all_callbacks_answered()
    with pytest.raises(BadRequest, match=r"(?i)Message_too_long"):
        await bot.answer_callback_query(query_id, "x" * 201)
    assert await bot.answer_callback_query(query_id, "x" * 200)
    assert sandbox.all_callbacks_answered()
    with pytest.raises(BadRequest, match=r"(?i)Query is too old and response timeout expired"):
        await bot.answer_callback_query(query_id)
    with pytest.raises(BadRequest, match=r"(?i)Query is too old"):
        await bot.answer_callback_query("123456")

    sandbox.callback_answer_timeout = 0.05
    late = await sandbox.user_presses(traveller.id, sent.message_id, "v1:1")
    await asyncio.sleep(0.1)
    with pytest.raises(BadRequest, match=r"(?i)Query is too old"):
        await bot.answer_callback_query(late.update["callback_query"]["id"])
    assert [record.answered for record in sandbox.unanswered_callback_queries()] == [False]


@pytest.mark.usefixtures("timedelta_retry_after")
async def test_one_chat_gets_429_after_a_burst(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    sandbox.configure_limits(per_chat_burst=3, per_chat_rate=1.0)
    for n in range(3):
        await bot.send_message(traveller.id, f"message {n}")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(traveller.id, "one too many")
    assert caught.value.retry_after == dtm.timedelta(seconds=1)
    other = await sandbox.add_user(first_name="Ana")
    await sandbox.user_sends(other.id, "hi")
    await bot.send_message(other.id, "another chat is not throttled")
    await asyncio.sleep(1.05)
    await bot.send_message(traveller.id, "a second later it goes through")
    assert [e.error for e in sandbox.api_errors()] == ["Too Many Requests: retry after 1"]


async def test_parameters_are_checked_against_the_spec(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    with pytest.raises(BadRequest, match='Unknown parameter "reply_to" for method sendmessage'):
        await bot.send_message(traveller.id, "hi", api_kwargs={"reply_to": 1})
    with pytest.raises(BadRequest, match='Parameter "message_id" must be of type integer'):
        await bot.delete_message(traveller.id, "abc")  # type: ignore[arg-type]
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": traveller.id})
    # PTB's convenience arguments are translated before they reach the wire
    first = await bot.send_message(traveller.id, "first")
    reply = await bot.send_message(
        traveller.id,
        "see https://example.com",
        reply_to_message_id=first.message_id,
        allow_sending_without_reply=True,
        disable_web_page_preview=True,
        protect_content=True,
    )
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.message_id == first.message_id
    with pytest.raises(BadRequest, match=r"(?i)Message to be replied not found"):
        await bot.send_message(traveller.id, "x", reply_parameters=ReplyParameters(9999))

    async with aiohttp.ClientSession() as session:
        url = f"{sandbox.base_url}{sandbox.token}"
        async with session.post(f"{url}/sendMessage", json={"chat_id": traveller.id}) as response:
            assert response.status == 400
            assert await response.json() == {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: message text is empty",
            }
        async with session.post(f"{url}/editMessageText", json={"text": "x"}) as response:
            assert (await response.json())["description"] == "Bad Request: chat_id is empty"
        async with session.post(f"{url}/getUpdatez") as response:
            assert response.status == 404
            assert await response.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found",
            }
        bad_button = {"inline_keyboard": [[{"text": "A", "callback_data": "a", "colour": "red"}]]}
        payload = {"chat_id": traveller.id, "text": "x", "reply_markup": bad_button}
        async with session.post(f"{url}/sendmessage", json=payload) as response:
            description = (await response.json())["description"]
            assert (
                description
                == 'Bad Request: can\'t parse inline keyboard button: Unknown field "colour"'
            )
        no_text = {"inline_keyboard": [[{"callback_data": "a"}]]}
        payload = {"chat_id": traveller.id, "text": "x", "reply_markup": no_text}
        async with session.post(f"{url}/sendMessage", json=payload) as response:
            description = (await response.json())["description"]
            assert (
                description
                == "Bad Request: can't parse inline keyboard button: Can't find field \"text\""
            )
        form = aiohttp.FormData({"chat_id": str(traveller.id), "text": "multipart works"})
        form.add_field("ignored_file", b"...", filename="f.txt")
        async with session.post(f"{url}/sendMessage", data=form) as response:
            assert (await response.json())["description"] == (
                'Bad Request: unknown parameter "ignored_file" for method sendMessage'
            )
        form = aiohttp.FormData(
            {"chat_id": str(traveller.id), "text": "multipart works"}, default_to_multipart=True
        )
        async with session.post(f"{url}/sendMessage", data=form) as response:
            assert (await response.json())["result"]["text"] == "multipart works"
    failed = {(e.method, e.error) for e in sandbox.api_errors()}
    assert ("getUpdatez", "Not Found") in failed


async def test_commands_per_scope(sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser) -> None:
    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
    await bot.set_my_commands(
        [BotCommand("start", "Start"), BotCommand("mybookings", "My bookings")],
        scope=BotCommandScopeAllPrivateChats(),
    )
    await bot.set_my_commands(
        [BotCommand("cancel", "Cancel")], scope=BotCommandScopeChat(traveller.id)
    )
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    private = await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats())
    assert [c.command for c in private] == ["start", "mybookings"]
    assert [c["command"] for c in sandbox.commands_for(traveller.id)] == ["cancel"]
    await bot.delete_my_commands(scope=BotCommandScopeChat(traveller.id))
    assert [c["command"] for c in sandbox.commands_for(traveller.id)] == ["start", "mybookings"]
    with pytest.raises(BadRequest, match=r"(?i)Bot_command_invalid"):
        await bot.set_my_commands([BotCommand("MyBookings", "Upper case is not allowed")])
    with pytest.raises(BadRequest, match=r"(?i)Chat not found"):
        await bot.set_my_commands([BotCommand("x", "y")], scope=BotCommandScopeChat(424242))


async def test_chat_actions_webhook_info_and_the_event_log(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    start = sandbox.last_seq
    assert await bot.send_chat_action(traveller.id, "typing")
    with pytest.raises(BadRequest, match=r"(?i)Wrong parameter action in request"):
        await bot.send_chat_action(traveller.id, "dancing")
    info = await bot.get_webhook_info()
    assert (info.url, info.pending_update_count) == ("", 1)  # the /start nobody fetched yet
    assert await bot.close()
    assert await bot.log_out()
    kinds = [event.kind for event in sandbox.events(start)]
    assert kinds == [
        EventKind.CHAT_ACTION,
        EventKind.API_ERROR,
        EventKind.API_CALL,
        EventKind.API_CALL,
    ]
    assert [event.seq for event in sandbox.events(start)] == list(range(start + 1, start + 5))


async def test_send_document_keeps_the_file_and_can_send_it_again(
    sandbox: SandboxBotApi, bot: Bot, traveller: SandboxUser
) -> None:
    sent = await bot.send_document(
        traveller.id,
        InputFile(b'{"a": 1}', filename="data.json"),
        caption="<b>Your</b> data",
        parse_mode="HTML",
    )
    assert sent.document is not None
    assert sent.document.file_name == "data.json"
    assert sent.caption == "Your data"
    stored = sandbox.bot_messages(traveller.id)[-1]
    assert stored.document is not None
    assert stored.document.content == b'{"a": 1}'
    again = await bot.send_document(traveller.id, sent.document.file_id)
    assert again.document is not None
    assert again.document.file_size == 8
    with pytest.raises(BadRequest, match="file identifier"):
        await bot.send_document(traveller.id, "no-such-file")
    with pytest.raises(BadRequest, match="non-empty"):
        await bot.send_document(traveller.id, InputFile(b"", filename="empty.txt"))
