//! The standard vocabulary (`std`): words that rearrange the stack, build lists, run lists
//! as programs and keep variables. They work on items of any type.

use super::{Failure, Param, Word, args, take_int, take_list, take_str};
use crate::interpreter::Context;
use crate::model::Item;
use crate::parser::MAX_NESTING;

type R = Result<(), Failure>;

pub(crate) static WORDS: &[Word] = &[
    Word {
        name: "call",
        params: &[Param::List],
        signature: "? List -- ?",
        summary: "Pop a list off the stack and execute it as a program.",
        examples: &[
            ("(,a,)", Some("a")),
            ("a,(,:dup,)", Some("a,a")),
            ("a", None),
        ],
        exec: call,
    },
    Word {
        name: "clear",
        params: &[],
        signature: "* -- <empty>",
        summary: "Remove all items from the stack.",
        examples: &[("a,b,c", Some("")), ("", Some(""))],
        exec: clear,
    },
    Word {
        name: "depth",
        params: &[],
        signature: " -- N",
        summary: "Push the depth of the stack.",
        examples: &[("", Some("0")), ("a", Some("a,1")), ("a,b", Some("a,b,2"))],
        exec: depth,
    },
    Word {
        name: "drop",
        params: &[Param::Any],
        signature: "a -- ",
        summary: "Remove the item on the top of the stack.",
        examples: &[("a,b,c", Some("a,b")), ("", None)],
        exec: drop,
    },
    Word {
        name: "dup",
        params: &[Param::Any],
        signature: "a -- a a",
        summary: "Duplicate the item on the top of the stack.",
        examples: &[("a", Some("a,a")), ("a,b", Some("a,b,b")), ("", None)],
        exec: dup,
    },
    Word {
        name: "each",
        params: &[Param::List, Param::List],
        signature: "items:List f:List -- f(items[0]) ... f(items[N])",
        summary: "For each item in a list push it on the stack and apply a function.",
        examples: &[("(,a,b,),(,:dup,)", Some("a,a,b,b")), ("a,(,:dup,)", None)],
        exec: each,
    },
    Word {
        name: "format",
        params: &[Param::Str, Param::List],
        signature: "pattern:String args:List -- String",
        summary: "Format a string printf-style: `%s` takes the next argument as text, `%d` as an                   integer, `%f` / `%.Nf` as a number, `%%` is a percent sign.",
        examples: &[
            ("foo%s,(,bar,)", Some("foobar")),
            ("%s-%d-%.2f,(,a,42,3.14159,)", Some("a-42-3.14")),
            ("%d,(,x,)", None),
            ("%s %s,(,a,)", None),
        ],
        exec: format,
    },
    Word {
        name: "freeze",
        params: &[],
        signature: "* -- <empty>",
        summary: "Move the whole stack out of reach of later words; it still ends up in the result.",
        examples: &[("a,b,c", Some("a,b,c"))],
        exec: freeze,
    },
    Word {
        name: "get",
        params: &[Param::Str],
        signature: "k -- vars[k]",
        summary: "Get the value of a variable and push it on the stack.",
        examples: &[("k,v,:set,k", Some("v")), ("k", None)],
        exec: get,
    },
    Word {
        name: "map",
        params: &[Param::List, Param::List],
        signature: "items:List f:List -- List(f(items[0]) ... f(items[N]))",
        summary: "Create a new list by applying a function to all elements of a list.",
        examples: &[
            ("(,a,b,),(,x,:swap,:drop,)", Some("(,x,x,)")),
            ("(,a,),(,:drop,)", None),
        ],
        exec: map,
    },
    Word {
        name: "ndrop",
        params: &[Param::Int],
        signature: "aN ... a0 N -- aN",
        summary: "Remove the top N items on the stack.",
        examples: &[
            ("a,0", Some("a")),
            ("a,b,c,2", Some("a")),
            ("a,b,c,4", Some("")),
            ("", None),
        ],
        exec: ndrop,
    },
    Word {
        name: "nlist",
        params: &[Param::Int],
        signature: "aN ... a0 N -- aN List(aN-1 ... a0)",
        summary: "Create a list with the top N items on the stack.",
        examples: &[
            ("a,0", Some("a,(,)")),
            ("a,b,c,2", Some("a,(,b,c,)")),
            ("a,b,c,4", Some("(,a,b,c,)")),
            ("", None),
        ],
        exec: nlist,
    },
    Word {
        name: "over",
        params: &[Param::Any, Param::Any],
        signature: "a b -- a b a",
        summary: "Copy the item in the second position on the stack to the top.",
        examples: &[("a,b", Some("a,b,a")), ("a", None)],
        exec: over,
    },
    Word {
        name: "pick",
        params: &[Param::Int],
        signature: "aN ... a0 N -- aN ... a0 aN",
        summary: "Pick an item in the stack and put a copy on the top.",
        examples: &[
            ("a,0", Some("a,a")),
            ("a,b,0", Some("a,b,b")),
            ("a,b,1", Some("a,b,a")),
            ("a,1", None),
            ("a", None),
        ],
        exec: pick,
    },
    Word {
        name: "roll",
        params: &[Param::Int],
        signature: "aN ... a0 N -- aN-1 ... a0 aN",
        summary: "Rotate an item in the stack and put it on the top.",
        examples: &[
            ("a,0", Some("a")),
            ("a,b,1", Some("b,a")),
            ("a,b,c,2", Some("b,c,a")),
            ("a,1", None),
        ],
        exec: roll,
    },
    Word {
        name: "rot",
        params: &[Param::Any],
        signature: "a ... b -- ... b a",
        summary: "Rotate the stack so that the item at the bottom is now at the top.",
        examples: &[("a,b,c,d", Some("b,c,d,a")), ("a", Some("a")), ("", None)],
        exec: rot,
    },
    Word {
        name: "-rot",
        params: &[Param::Any],
        signature: "... b a -- a ... b",
        summary: "Rotate the stack so that the item at the top is now at the bottom.",
        examples: &[("a,b,c,d", Some("d,a,b,c")), ("", None)],
        exec: reverse_rot,
    },
    Word {
        name: "set",
        params: &[Param::Str, Param::Any],
        signature: "k v -- ",
        summary: "Set the value of a variable.",
        examples: &[("k,v", Some("")), ("k", None)],
        exec: set,
    },
    Word {
        name: "sset",
        params: &[Param::Any, Param::Str],
        signature: "v k -- ",
        summary: "Set the value of a variable, key on top (shorthand for `:swap,:set`).",
        examples: &[("v,k", Some("")), ("v", None)],
        exec: sset,
    },
    Word {
        name: "fcall",
        params: &[Param::Str],
        signature: "? name -- ?",
        summary: "Run the list stored in a variable as a program (shorthand for `:get,:call`).",
        examples: &[("f,(,:dup,),:set,a,f", Some("a,a")), ("f", None)],
        exec: fcall,
    },
    Word {
        name: "swap",
        params: &[Param::Any, Param::Any],
        signature: "a b -- b a",
        summary: "Swap the top two items on the stack.",
        examples: &[("a,b", Some("b,a")), ("a", None)],
        exec: swap,
    },
    Word {
        name: "list",
        params: &[],
        signature: "* -- List(*)",
        summary: "Pop all items off the stack and push them as a list.",
        examples: &[("a,b,c", Some("(,a,b,c,)")), ("", Some("(,)"))],
        exec: to_list,
    },
    Word {
        name: "2over",
        params: &[Param::Any, Param::Any],
        signature: "a b -- a b a b",
        summary: "Copy the top two items on the stack (shorthand for `:over,:over`).",
        examples: &[("a,b", Some("a,b,a,b")), ("a", None)],
        exec: two_over,
    },
    Word {
        name: "nip",
        params: &[Param::Any, Param::Any],
        signature: "a b -- b",
        summary: "Remove the second item on the stack (shorthand for `:swap,:drop`).",
        examples: &[("a,b", Some("b")), ("a", None)],
        exec: nip,
    },
    Word {
        name: "tuck",
        params: &[Param::Any, Param::Any],
        signature: "a b -- b a b",
        summary: "Copy the top item below the second (shorthand for `:swap,:over`).",
        examples: &[("a,b", Some("b,a,b")), ("a", None)],
        exec: tuck,
    },
];

/// Pushes a copy of `item`, charged against the copy budget.
fn push_copy(ctx: &mut Context<'_>, item: &Item) -> R {
    ctx.charge_copy(item)?;
    ctx.stack.push(item.clone());
    Ok(())
}

fn check_nesting(list: &Item) -> R {
    if list.list_depth() > MAX_NESTING {
        return Err(Failure::TooComplex(format!(
            "lists nested more than {MAX_NESTING} deep"
        )));
    }
    Ok(())
}

fn call(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [program] = args(a)?;
    ctx.run(take_list(program)?)
}

fn clear(ctx: &mut Context<'_>, _: Vec<Item>) -> R {
    ctx.stack.clear();
    Ok(())
}

fn depth(ctx: &mut Context<'_>, _: Vec<Item>) -> R {
    let n = ctx.stack.len();
    ctx.stack.push(Item::Str(n.to_string()));
    Ok(())
}

fn drop(_: &mut Context<'_>, _: Vec<Item>) -> R {
    Ok(())
}

fn dup(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x] = args(a)?;
    push_copy(ctx, &x)?;
    ctx.stack.push(x);
    Ok(())
}

fn each(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [items, f] = args(a)?;
    let f = take_list(f)?;
    let f_item = Item::List(f);
    for item in take_list(items)? {
        ctx.stack.push(item);
        ctx.charge_copy(&f_item)?;
        if let Item::List(program) = f_item.clone() {
            ctx.run(program)?;
        }
    }
    Ok(())
}

fn format(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [pattern, list] = args(a)?;
    let pattern = take_str(pattern)?;
    let mut args = take_list(list)?.into_iter();
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            precision = Some(digits.parse().unwrap_or(0).min(20));
        }
        let conv = chars
            .next()
            .ok_or_else(|| Failure::Invalid(format!("pattern '{pattern}' ends in '%'")))?;
        if conv == '%' {
            out.push('%');
            continue;
        }
        let arg = args.next().ok_or_else(|| {
            Failure::Invalid(format!(
                "pattern '{pattern}' needs more arguments than given"
            ))
        })?;
        let text = arg.to_string();
        let number = || {
            text.trim()
                .parse::<f64>()
                .map_err(|_| Failure::Invalid(format!("'%{conv}' needs a number, got '{text}'")))
        };
        match conv {
            's' => out.push_str(&text),
            'd' => {
                let v = number()?;
                if v.fract() != 0.0 {
                    return Err(Failure::Invalid(format!(
                        "'%d' needs an integer, got '{text}'"
                    )));
                }
                out.push_str(&format!("{v:.0}"));
            }
            'f' => out.push_str(&format!("{:.*}", precision.unwrap_or(6), number()?)),
            other => {
                return Err(Failure::Invalid(format!(
                    "unsupported conversion '%{other}' (use %s, %d, %f or %%)"
                )));
            }
        }
    }
    ctx.stack.push(Item::Str(out));
    Ok(())
}

fn freeze(ctx: &mut Context<'_>, _: Vec<Item>) -> R {
    let mut stack = std::mem::take(&mut ctx.stack);
    ctx.frozen.append(&mut stack);
    Ok(())
}

fn get(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [k] = args(a)?;
    let k = take_str(k)?;
    let Some(v) = ctx.vars.get(&k).cloned() else {
        return Err(Failure::Invalid(format!("no variable named '{k}'")));
    };
    push_copy(ctx, &v)
}

fn map(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [items, f] = args(a)?;
    let f_item = Item::List(take_list(f)?);
    let mut results = Vec::new();
    for item in take_list(items)? {
        ctx.stack.push(item);
        ctx.charge_copy(&f_item)?;
        if let Item::List(program) = f_item.clone() {
            ctx.run(program)?;
        }
        let Some(result) = ctx.stack.pop() else {
            return Err(Failure::Invalid(
                "the function left nothing on the stack".to_string(),
            ));
        };
        results.push(result);
    }
    ctx.stack.push(Item::List(results));
    Ok(())
}

fn ndrop(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [n] = args(a)?;
    let n = take_int(n)?.min(ctx.stack.len());
    ctx.stack.truncate(ctx.stack.len() - n);
    Ok(())
}

fn nlist(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [n] = args(a)?;
    let n = take_int(n)?.min(ctx.stack.len());
    let items = ctx.stack.split_off(ctx.stack.len() - n);
    let list = Item::List(items);
    check_nesting(&list)?;
    ctx.stack.push(list);
    Ok(())
}

fn over(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x, y] = args(a)?;
    ctx.charge_copy(&x)?;
    let copy = x.clone();
    ctx.stack.extend([x, y, copy]);
    Ok(())
}

/// Index into the stack of the item `n` below the top, if there is one.
fn from_top(ctx: &Context<'_>, n: usize) -> Result<usize, Failure> {
    let len = ctx.stack.len();
    if n >= len {
        return Err(Failure::Invalid(format!(
            "index {n} is out of range for a stack of {len} items"
        )));
    }
    Ok(len - 1 - n)
}

fn pick(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [n] = args(a)?;
    let i = from_top(ctx, take_int(n)?)?;
    let item = ctx.stack[i].clone();
    push_copy(ctx, &item)
}

fn roll(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [n] = args(a)?;
    let i = from_top(ctx, take_int(n)?)?;
    let item = ctx.stack.remove(i);
    ctx.stack.push(item);
    Ok(())
}

fn rot(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [top] = args(a)?;
    ctx.stack.push(top);
    let bottom = ctx.stack.remove(0);
    ctx.stack.push(bottom);
    Ok(())
}

fn reverse_rot(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [top] = args(a)?;
    ctx.stack.insert(0, top);
    Ok(())
}

fn set(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [k, v] = args(a)?;
    ctx.vars.insert(take_str(k)?, v);
    Ok(())
}

fn sset(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [v, k] = args(a)?;
    ctx.vars.insert(take_str(k)?, v);
    Ok(())
}

fn fcall(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [k] = args(a)?;
    let k = take_str(k)?;
    match ctx.vars.get(&k).cloned() {
        Some(Item::List(program)) => {
            ctx.charge_copy(&Item::List(program.clone()))?;
            ctx.run(program)
        }
        Some(other) => Err(Failure::Invalid(format!(
            "variable '{k}' holds a {}, not a list",
            other.type_name()
        ))),
        None => Err(Failure::Invalid(format!("no variable named '{k}'"))),
    }
}

fn swap(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x, y] = args(a)?;
    ctx.stack.extend([y, x]);
    Ok(())
}

fn to_list(ctx: &mut Context<'_>, _: Vec<Item>) -> R {
    let list = Item::List(std::mem::take(&mut ctx.stack));
    check_nesting(&list)?;
    ctx.stack.push(list);
    Ok(())
}

fn two_over(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x, y] = args(a)?;
    ctx.charge_copy(&x)?;
    ctx.charge_copy(&y)?;
    let (cx, cy) = (x.clone(), y.clone());
    ctx.stack.extend([x, y, cx, cy]);
    Ok(())
}

fn nip(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [_, y] = args(a)?;
    ctx.stack.push(y);
    Ok(())
}

fn tuck(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [x, y] = args(a)?;
    ctx.charge_copy(&y)?;
    let cy = y.clone();
    ctx.stack.extend([cy, x, y]);
    Ok(())
}
