"""The degenerate-response guard: responses that say nothing score 0 before any model call.

A response is content-free when, once its form is taken away, nothing is left that could satisfy a
rubric. Its form is: markup (tags, empty reasoning blocks, code fences), formatting (markdown marks,
bullets, list numbers), punctuation and symbols, echoed labels and rubric references ("support",
"Rubric 2:", ``r3``), and the discourse that opens or frames an answer ("let me think", "step by step",
"here is the answer", "according to the retrieved passages"). What is left must carry content: a number,
or a word that is neither a meta/discourse word nor a function word. The rule is structural; the lexicon
below lists WORDS, in several languages, never phrases, so "Réfléchissons étape par étape" and "Let us
carefully work through it" are recognised without being written down anywhere.

The guard never fires on a genuine answer, however short: "Yes.", "42", "Paris", "Nein", "北京", "It is."
(function words alone, with no meta word, are a short answer, not an opener). Scripts written without
spaces (Han, kana, Thai, ...) are read by stripping known meta and function strings from each run: what
remains is content. A short opener clause that ends in ":" with nothing after it introduces content that
never comes, whatever its language ("Jibu:").
"""

from __future__ import annotations

import re
import unicodedata

DEGENERATE = "degenerate"

# Meta / discourse words: openers, reasoning and answer framing, retrieval framing, filler, the judging
# vocabulary (labels, rubric, instructions). Space-separated; casefolded NFKC.
_META = """
let lets think thinking thought thoughts reason reasoning reasons step steps stepwise solve solving solved
solution solutions problem problems question questions answer answers answered answering response responses
respond result results here final finally first firstly second secondly next then now begin beginning
start starting okay ok alright sure certainly course absolutely great good fine well hmm hm um uh umm erm
ah oh analyze analyse analysis analyzing analysing explanation explain explaining consider considering
look looking carefully careful break breaking approach approaching below following follows given based
information context provided retrieved retrieve documents document sources source passages passage
search searched searching according summary summarize summarise conclusion overview note notes attempt
try trying go going work working figure figuring understand understanding see determine determining find
finding calculate calculating compute evaluate evaluating examine examining review reviewing detailed
detail details comprehensive brief briefly short quick simple simply process processing task query request
thanks thank happy help glad need needs carefully logically systematically methodically thoroughly
rubric rubrics criterion criteria nugget nuggets label labels labelled labeled support supports supported
supporting partial partially partial_support not_support ignore ignored previous prior instructions
instruction mark rate grade output judge judgement judgment verifier evaluator assistant system user json
every all each lorem ipsum dolor sit amet consectetur adipiscing blah etc ellipsis reply replying tldr tl dr
ask asking asked provide providing research researched relevant web fully satisfy satisfies satisfied
hello hi hey greetings placeholder null undefined
vamos pensar pensemos piensa paso pasos resolver resolvamos problema respuesta solución solucion pregunta
aquí aqui primero analicemos veamos razonamiento razonemos análisis analisis explicación según
réponse reponse étape etape étapes pensons réfléchissons reflechissons réflexion reflexion voici voilà
problème probleme résolvons resolvons analysons abord selon raisonnement commençons commencons
antwort lösung losung schritt schritten lass lasst uns denken nachdenken überlegen uberlegen hier frage
lösen losen zuerst zunächst analyse erklärung gemäß überlegung schauen
resposta solução solucao passo passos pensamos raciocínio raciocinio primeiro pergunta analisar
risposta soluzione pensiamo ragioniamo ecco domanda ragionamento primo analizziamo
antwoord oplossing stap stappen denken laten vraag eerst redenering
cevap yanıt yanit çözüm cozum adım adim düşünelim dusunelim soru önce
jawaban solusi langkah mari kita berpikir pikirkan pertanyaan pertama
trả lời giải pháp bước hãy suy nghĩ câu hỏi
odpowiedź odpowiedz rozwiązanie rozwiazanie krok pomyślmy pomyslmy pytanie najpierw
ответ ответа решение шаг шагом шагам шаги давайте подумаем рассуждение вопрос задача сначала итак
разберём разберем
відповідь рішення крок давайте подумаємо питання
الإجابة الاجابة الجواب إجابة الحل حل خطوة بخطوة لنفكر دعنا دعونا نفكر السؤال أولا التفكير
תשובה פתרון שלב בשלב בואו נחשוב
उत्तर जवाब हल चरण दर आइए सोचते सोचें प्रश्न समाधान
উত্তর সমাধান ধাপে চলুন ভাবি
답 답변 정답 해결 단계 단계별로 생각 생각해 봅시다 보자 풀이 질문 먼저 차근차근
ομαδα απάντηση λύση βήμα ας σκεφτούμε
"""
# Function words: neutral, neither content nor meta ("It is." is an answer; "Here is the answer." is not).
_FUNCTION = """
a an the is are was were be been being am it its this that these those there to of for and or so by on in
at as with from into onto about through after before up down out over my our your their me us we i you
he she they
will would can could should shall may might must do does did have has had s ll d re ve t m let's
what which who how why when where whether if than very just also really please shall
el la los las un una es está esta son de del por para y o con en lo que al su sus mi
le les une un est et ou du des par pour avec dans en ce cette ces d l je nous on qu que à
der die das ein eine ist sind und oder von für fur mit in im auf zu wir ich es den dem des
o a os as um uma é e ou de do da em para com no na que
il lo gli le un una è e o di del della per con in che
de het een is en of van voor met in we ik
bir ve veya bu şu için ile
ini itu dan atau dari untuk dengan di yang adalah
là và hoặc của cho với trong chúng ta tôi
i oraz lub z do w na się to jest
и или в на с по к это мы я за вот
і або в на з це ми я
و أو في من على إلى هذا هذه هنا هو هي
ו או של את זה
और या का की के में से यह है हैं को
এবং বা এর এই হয়
은 는 이 가 을 를 에 의 로 으로 해 합시다 하자 하겠습니다
και ή του της το να
"""
# Strings stripped from runs of scripts written without spaces; meta ones first, longest first.
_CJK_META = """
让我们一步一步地 一步一步地 一步一步 一步步 逐步 思考过程 思考 思路 推理过程 推理 解题思路 解题 解答 解决 问题
答案 回答 答 解析 解 分析 首先 步骤 第一步 好的 嗯 我们来 我来 想一想 想想 过程 结论 总结 根据 检索 文档 资料
讓我們 一步一步地 思考過程 問題 答案 回答 解決 步驟 首先 好的
答え 回答 解答 解説 かいせつ こたえ 解き方 考え方 考えて 考えましょう 考えます 考える 思考
ステップバイステップ ステップ 段階 順番
一歩ずつ 一つずつ 順を追って 問題 質問 まず 最初に 解 答 では それでは えーと ええと うーん 分析 説明 結論
คำตอบ ทีละขั้นตอน ขั้นตอน มาคิด คิด คำถาม วิธีแก้
"""
_CJK_FUNCTION = """
的 是 了 我 们 們 来 來 吧 让 讓 地 这 這 个 個 一 下 看 说 說 个 要 我们 我們
は を が の に て で と も ます ましょう しょう です よう する します して
ね よ か な れ さ 一 つ ずつ ず ご ください 下さい
มา กัน ครับ ค่ะ นะ
"""

# Inflections read as their lexicon word ("steps", "asking", "resolverlo", "fournies", "разберёмся",
# "шагам"): endings that change the form of a word, not what it is. Derivations ("documentary",
# "problematic", "workers") are not endings here and stay content.
_ENDINGS = ("s", "es", "ed", "ing", "ly", "lo", "la", "los", "las", "nos", "mos", "ies", "ée", "ées",
            "ся", "сь", "ам", "ом", "ами", "ах")  # fmt: skip

META = frozenset(_META.casefold().split())
FUNCTION = frozenset(_FUNCTION.casefold().split())
CJK_META = tuple(sorted(set(_CJK_META.split()), key=len, reverse=True))
CJK_FUNCTION = tuple(sorted(set(_CJK_FUNCTION.split()), key=len, reverse=True))

_LABEL = re.compile(r"\b(?:not|partial(?:ly)?)[\s_-]?support(?:ed|s)?\b", re.I)
_TAG = re.compile(r"</?[A-Za-z][\w:-]{0,30}(?:\s[^<>]{0,200})?/?>|<!--.*?-->", re.S)
# A rubric / label reference with its index: "Rubric 1", "criterion #2", "rubric_3", "r4", "[5]", "(6)";
# the index is form, not content.
_REFERENCE = re.compile(
    r"\b(?:rubrics?|criteri(?:on|a)|nuggets?|labels?|items?|steps?|schritt|paso|étape|etape|шаг|r)"
    r"[\s#:_-]*\d{1,3}\b|[\[(]\d{1,3}[\])]",
    re.I,
)
# A list number that opens a line and is followed by text: "1. support"; a bare "42." stays content.
_ENUMERATOR = re.compile(r"(?m)^\s*\d{1,3}[.):]\s+(?=\S)")
# A list skeleton: lines holding a list number alone ("1.\n2.\n3."); one such line ("42.") is an answer.
_BARE_ENUMERATOR = re.compile(r"(?m)^\s*\d{1,3}[.)]\s*$")
_NO_SPACE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")
_DANGLING = re.compile(r":\s*$")


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def _tokens(text: str) -> list[str]:
    """Runs of letters, marks and digits (so Devanagari vowel signs stay inside their word)."""
    tokens, current = [], []
    for char in text:
        if _is_word_char(char):
            current.append(char)
        elif current:
            tokens.append("".join(current))
            current = []
    if current:
        tokens.append("".join(current))
    return tokens


def _no_space_script(token: str) -> bool:
    return any(unicodedata.name(char, "").startswith(_NO_SPACE_SCRIPTS) for char in token)


def _strip_all(token: str, parts: tuple[str, ...]) -> tuple[str, bool]:
    stripped = False
    for part in parts:
        if part in token:
            token, stripped = token.replace(part, ""), True
    return token, stripped


def _kinds(token: str) -> set[str]:
    """What a token is: {"content"}, {"meta"}, {"function"}, or both of the last two for a no-space run."""
    if any(unicodedata.category(char)[0] == "N" for char in token):
        return {"content"}  # a number, in any script
    if _no_space_script(token):
        rest, meta = _strip_all(token, CJK_META)
        rest, _ = _strip_all(rest, CJK_FUNCTION)
        if rest:
            return {"content"}
        return {"meta"} if meta else {"function"}
    word = token.casefold()
    if word in META or _inflected(word, META):
        return {"meta"}
    if word in FUNCTION:
        return {"function"}
    return {"content"}


def _inflected(word: str, lexicon: frozenset[str]) -> bool:
    """Whether ``word`` is a lexicon word of three letters or more plus one of :data:`_ENDINGS`."""
    return any(
        word.endswith(ending) and len(word) - len(ending) >= 3 and word[: -len(ending)] in lexicon
        for ending in _ENDINGS
    )


def content_tokens(response: str) -> tuple[list[str], bool]:
    """The tokens of ``response`` that carry content, and whether any of its form was meta (openers,
    labels, rubric references, markup)."""
    text = unicodedata.normalize("NFKC", response).replace("\u2019", "'").replace("\u02bc", "'")
    stripped = _TAG.sub(" ", text)
    meta = stripped != text  # markup alone is form: an empty <think></think> says nothing
    if len(_BARE_ENUMERATOR.findall(stripped)) > 1:  # a list skeleton is form
        stripped, meta = _BARE_ENUMERATOR.sub(" ", stripped), True
    unlabelled = _LABEL.sub(" ", _ENUMERATOR.sub(" ", stripped)).replace("_", " ")
    referenced = _REFERENCE.sub(" ", unlabelled)
    meta = meta or referenced != stripped.replace("_", " ")
    content: list[str] = []
    for token in _tokens(referenced):
        kinds = _kinds(token)
        if "content" in kinds:
            content.append(token)
        meta = meta or "meta" in kinds
    return content, meta


def is_degenerate(response: str | None) -> bool:
    """True for a response with no content: empty, only punctuation/symbols/markup, or nothing beyond
    openers, filler, formatting and echoed labels, in any language; or a short clause left dangling on
    ":" with nothing after it."""
    if response is None:
        return True
    content, meta = content_tokens(response)
    if not content:
        # only function words and no form at all ("It is.", "Not at all") is a short answer
        tokens = _tokens(unicodedata.normalize("NFKC", response))
        return meta or not tokens
    text = unicodedata.normalize("NFKC", response).strip()
    return len(text) <= 60 and "\n" not in text and bool(_DANGLING.search(text)) and len(content) <= 2
