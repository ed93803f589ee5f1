// Times the server wrote in UTC (<time data-local="short">), shown in the reader's own time:
// "14:30" today, "3 Dec, 14:30" another day; the full date on hover.

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

for (const time of document.querySelectorAll('time[data-local="short"]')) {
  const date = new Date(time.dateTime);
  if (Number.isNaN(date.getTime())) continue;
  const today = date.toDateString() === new Date().toDateString();
  time.textContent = today ? timeFmt.format(date) : `${dayFmt.format(date)}, ${timeFmt.format(date)}`;
  time.title = fullFmt.format(date);
}
