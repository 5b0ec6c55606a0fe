from caft import prompts

Q, OPTS = "What is 2 + 2?", ["3", "4", "5"]


def test_fallback_numeric_is_the_papers_v1_text():
    system, user = prompts.build_messages(Q, OPTS, "math", "fallback", "numeric")
    assert system == {
        "role": "system",
        "content": "The following are multiple choice questions about math. If you are certain about the answer "
        "return the correct option number, otherwise return 0. Write down ONLY the NUMBER and nothing else.",
    }
    assert user["content"] == (
        "Question: What is 2 + 2?\nOptions:\n1. 3\n2. 4\n3. 5\n"
        "Choose one of the answers. If you are certain about the answer return the correct option number, "
        "otherwise return 0. Write down ONLY the NUMBER and nothing else."
    )


def test_plain_numeric_is_the_papers_text():
    system, user = prompts.build_messages(Q, OPTS, "math", "plain", "numeric")
    assert system["content"] == (
        "The following are multiple choice questions about math. "
        "Write down ONLY the NUMBER of the correct answer and nothing else."
    )
    assert user["content"] == (
        "Question: What is 2 + 2?\nOptions:\n1. 3\n2. 4\n3. 5\n"
        "Choose one of the answers. Write down ONLY the NUMBER of the correct answer and nothing else."
    )


def test_letter_ids_and_no_subject():
    system, user = prompts.build_messages(Q, OPTS, None, "plain", "letter")
    assert system["content"] == (
        "The following are multiple choice questions. "
        "Write down ONLY the LETTER of the correct answer and nothing else."
    )
    assert "Options:\nA. 3\nB. 4\nC. 5\n" in user["content"]


def test_fallback_letter_mentions_option_letter():
    system, _ = prompts.build_messages(Q, OPTS, "math", "fallback", "letter")
    assert "return the correct option letter, otherwise return 0. Write down ONLY the LETTER" in system["content"]


def test_chat_template_applied_with_generation_prompt(tiny_model):
    _, tok = tiny_model
    text = prompts.apply_chat_template(tok, prompts.build_messages(Q, OPTS, "math", "plain", "letter"))
    assert text.startswith("<|im_start|>system\nThe following are multiple choice questions about math.")
    assert text.endswith("nothing else.<|im_end|>\n<|im_start|>assistant\n")


def test_system_role_refused_by_template_is_merged_into_user(tiny_model):
    _, tok = tiny_model

    class NoSystem:
        chat_template = "x"
        name_or_path = "no-system"

        def apply_chat_template(self, messages, **kw):
            if any(m["role"] == "system" for m in messages):
                from jinja2 import TemplateError

                raise TemplateError("System role not supported")
            return "|".join(m["role"] + ":" + m["content"] for m in messages)

    out = prompts.apply_chat_template(
        NoSystem(), [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    )
    assert out == "user:S\n\nU"
