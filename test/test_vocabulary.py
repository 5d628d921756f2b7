import pytest

from ovseg_core.vocabulary import MAX_CLASSES, VocabClass, Vocabulary


def test_parse_user_format():
    v = Vocabulary.parse("car; road [stuff]; person,child,girl")
    assert v.names == ["car", "road", "person"]
    assert v.is_thing == [True, False, True]
    assert len(v) == 3
    assert v.classes[2].synonyms == ("person", "child", "girl")
    assert v.classes[0].synonyms == ("car",)


def test_parse_newlines_blanks_whitespace_and_tags():
    v = Vocabulary.parse("\n  traffic   light ;; \n sky [Stuff]\n tree , plant [thing];\n")
    assert v.names == ["traffic light", "sky", "tree"]
    assert v.is_thing == [True, False, True]
    assert v.classes[2].synonyms == ("tree", "plant")


def test_to_text_round_trips_and_key_is_canonical():
    v = Vocabulary.parse("car; road [stuff]; person, child, girl")
    assert v.to_text() == "car; road [stuff]; person, child, girl"
    assert Vocabulary.parse(v.to_text()) == v
    same = Vocabulary.parse("car\n road  [stuff] ;person,child,girl;")
    assert same.key() == v.key()
    assert Vocabulary.parse("car; road; person, child, girl").key() != v.key()
    assert Vocabulary.parse("car; road [stuff]; person, child").key() != v.key()
    assert {v: 1}[same] == 1  # hashable: usable as a dict key


def test_from_names_and_from_any():
    v = Vocabulary.from_names(["wall", "chair"], is_thing=[False, True])
    assert v.names == ["wall", "chair"] and v.is_thing == [False, True]
    assert Vocabulary.from_any(v) is v
    assert Vocabulary.from_any("wall [stuff]; chair") == v
    assert Vocabulary.from_any(["wall", "chair"]).is_thing == [True, True]
    with pytest.raises(TypeError):
        Vocabulary.from_any(3)
    with pytest.raises(ValueError, match="one flag per name"):
        Vocabulary.from_names(["a", "b"], is_thing=[True])


def test_vocab_class_puts_name_first_and_dedupes():
    c = VocabClass("person", ("child", "person", "child"))
    assert c.synonyms == ("person", "child")
    assert VocabClass("car").synonyms == ("car",)


@pytest.mark.parametrize("text", ["", "  ", " ; ;\n;"])
def test_empty_vocabulary_fails(text):
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.parse(text)
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.from_names([])


def test_duplicate_names_fail_case_insensitively():
    with pytest.raises(ValueError, match="duplicate class name 'Car'.*synonyms"):
        Vocabulary.parse("car; road; Car")


def test_unknown_tag_fails():
    with pytest.raises(ValueError, match=r"unknown tag \[stuf\].*\[stuff\] or \[thing\]"):
        Vocabulary.parse("car; road [stuf]")


def test_tag_without_name_fails():
    with pytest.raises(ValueError, match="no class name"):
        Vocabulary.parse("car; [stuff]")


def test_reserved_characters_fail():
    with pytest.raises(ValueError, match="Vocabulary.parse"):
        Vocabulary.from_names(["person,child"])
    with pytest.raises(ValueError, match="reserves"):
        Vocabulary.parse("car [thing] red")
    with pytest.raises(ValueError, match="empty name"):
        Vocabulary.from_names(["car", "  "])


def test_too_large_fails():
    Vocabulary.from_names([f"c{i}" for i in range(MAX_CLASSES)])
    with pytest.raises(ValueError, match="MAX_CLASSES"):
        Vocabulary.from_names([f"c{i}" for i in range(MAX_CLASSES + 1)])
