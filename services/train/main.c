/* moda-train — placeholder main until the service lands. */
#include <stdio.h>
int main(void)
{
    puts("moda-train " MODA_VERSION);
    return 0;
}
